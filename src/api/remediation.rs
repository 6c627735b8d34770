//! Remediation routes (issue 14): rules (`/api/rules`) and the events they caused
//! (`/api/remediations`), with the API's revert. The application core runs the rules.

use serde_json::{json, Value};

use super::response::Response;
use super::validate;
use crate::app::remediation::{RuleError, RuleSpec};
use crate::app::{unix_ms, App};

fn error(e: RuleError) -> Response {
    let (status, code) = match &e {
        RuleError::Invalid(_) => (400, "bad_request"),
        RuleError::Exists(_) => (409, "exists"),
        RuleError::NotFound(_) => (404, "not_found"),
        RuleError::TooMany => (429, "too_many_rules"),
    };
    Response::error(status, code, e.to_string())
}

/// `GET /api/rules`.
pub fn list_rules(app: &App) -> Response {
    let rules: Vec<&RuleSpec> = app.rules().collect();
    Response::json(200, json!({ "rules": rules }))
}

/// `POST /api/rules`: a rule as in the config file.
pub fn add_rule(app: &mut App, body: &[u8]) -> Response {
    let rule = validate::object(body).and_then(|obj| {
        serde_json::from_value::<RuleSpec>(Value::Object(obj)).map_err(|e| e.to_string())
    });
    let rule = match rule {
        Ok(r) => r,
        Err(e) => return Response::error(400, "bad_request", format!("rule: {e}")),
    };
    let shown = json!(rule);
    match app.add_api_rule(rule) {
        Ok(()) => Response::json(201, shown),
        Err(e) => error(e),
    }
}

/// `DELETE /api/rules/{id}`.
pub fn delete_rule(app: &mut App, id: &str) -> Response {
    match app.remove_rule(id) {
        Ok(_) => Response::json(200, json!({ "deleted": id })),
        Err(e) => error(e),
    }
}

/// `GET /api/remediations`: every event (newest last) and those in force.
pub fn events(app: &App) -> Response {
    let (events, in_force) = app.remediation_events();
    Response::json(200, json!({ "events": events, "in_force": in_force }))
}

/// `POST /api/remediations/{id}/revert`.
pub fn revert(app: &mut App, id: &str) -> Response {
    match app.revert_remediation(id, unix_ms()) {
        Ok(()) => Response::json(200, json!({ "reverted": id })),
        Err(_) => Response::error(
            404,
            "not_found",
            format!("no remediation \"{id}\" in force"),
        ),
    }
}
