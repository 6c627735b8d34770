//! Operator API tokens with scopes: a read-only dashboard token reads but is refused (403)
//! on writes, an operate token runs polls but cannot delete or audit, the admin token does
//! everything, and an unknown token gets 401.

mod common;

use common::*;
use serde_json::json;

const READ: &str = "dashboard-read-0123456789";
const OPERATE: &str = "producer-operate-0123456789";

#[test]
fn scoped_tokens_are_refused_beyond_their_scope() {
    let dir = std::env::temp_dir().join(format!("ovation-scopes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ovation.toml");
    std::fs::write(
        &config,
        format!(
            "[[api_tokens]]\ntoken = \"{READ}\"\nscope = \"read\"\n\n\
             [[api_tokens]]\ntoken = \"{OPERATE}\"\nscope = \"operate\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let call = |token: &str, method: &str, path: &str, body: Option<&serde_json::Value>| {
        api_call(server.api, method, path, body, Some(token))
    };

    // Read-only: GETs work, writes are 403 with a reason.
    assert_eq!(call(READ, "GET", "/api/stats", None).0, 200);
    let (status, e) = call(READ, "POST", "/api/streams", Some(&json!({"id": "s"})));
    assert_eq!(status, 403, "{e}");
    assert_eq!(e["error"]["code"], "forbidden");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("read"),
        "{e}"
    );
    let (status, _) = call(
        READ,
        "POST",
        "/api/groups/global/messages",
        Some(&json!({"payload": 1})),
    );
    assert_eq!(status, 403);

    // Operate: runs the show, but DELETE and audits need admin.
    let (status, body) = call(OPERATE, "POST", "/api/streams", Some(&json!({"id": "s"})));
    assert_eq!(status, 201, "{body}");
    let (status, g) = call(
        OPERATE,
        "POST",
        "/api/groups",
        Some(&json!({"name": "fans", "match": {"stream": ["s"]}})),
    );
    assert_eq!(status, 201, "{g}");
    let gid = g["id"].as_str().unwrap();
    let (status, _) = call(OPERATE, "DELETE", &format!("/api/groups/{gid}"), None);
    assert_eq!(status, 403);
    assert_eq!(call(OPERATE, "POST", "/api/audits", None).0, 403);

    // Admin (--api-token) does everything; an unknown token is 401.
    assert_eq!(
        call(TOKEN, "DELETE", &format!("/api/groups/{gid}"), None).0,
        200
    );
    assert_eq!(call(TOKEN, "POST", "/api/audits", None).0, 202);
    assert_eq!(
        call("unknown-token-0123456789", "GET", "/api/stats", None).0,
        401
    );
    let _ = std::fs::remove_dir_all(&dir);
}
