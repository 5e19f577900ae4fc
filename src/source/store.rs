//! Building an object store for a location's root URL, with credentials and endpoints from the
//! environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and explicit options on top.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ClientConfigKey, ObjectStore};
use url::Url;

use crate::error::{Error, Result};

/// Whether a key belongs to the store rather than to cliptta: `aws_*`, `google_*`, `azure_*`
/// and the client settings `allow_http`, `timeout`, `connect_timeout`.
pub fn is_store_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["aws_", "google_", "azure_"].iter().any(|p| key.starts_with(p))
        || matches!(key.as_str(), "allow_http" | "timeout" | "connect_timeout" | "allow_invalid_certificates")
}

/// Checks that every option is a key the store for `url` understands (no I/O).
pub fn check_store_options(url: &Url, options: &[(String, String)]) -> Result<()> {
    for (key, _) in options {
        let k = key.to_ascii_lowercase();
        let known = match url.scheme() {
            "s3" | "s3a" => k.parse::<AmazonS3ConfigKey>().is_ok(),
            "gs" => k.parse::<GoogleConfigKey>().is_ok(),
            "az" | "azure" | "abfs" | "abfss" | "adl" => k.parse::<AzureConfigKey>().is_ok(),
            "http" | "https" => k.parse::<ClientConfigKey>().is_ok(),
            _ => false,
        };
        if !known {
            return Err(Error::Location {
                location: url.to_string(),
                message: format!("store option `{key}` does not apply to {} locations", url.scheme()),
            });
        }
    }
    Ok(())
}

/// The options among `options` that apply to the store for `url` (a scan's store options may
/// serve two stores: the images' and the model's).
pub fn store_options_for(url: &Url, options: &[(String, String)]) -> Vec<(String, String)> {
    options.iter().filter(|o| check_store_options(url, std::slice::from_ref(o)).is_ok()).cloned().collect()
}

/// Builds the store for a root URL (`s3://bucket/`, `file:///`, ...). Cloud stores start from
/// the environment (`AmazonS3Builder::from_env` and friends), then apply `options`.
/// A `memory://` store built here is new and empty: register a shared one to read from it.
pub fn build_store(url: &Url, options: &[(String, String)]) -> Result<Arc<dyn ObjectStore>> {
    check_store_options(url, options)?;
    let opts = options.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone()));
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => Arc::new(LocalFileSystem::new()),
        "memory" => Arc::new(InMemory::new()),
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(url.as_str());
            for (k, v) in opts {
                if let Ok(key) = k.parse() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.build()?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (k, v) in opts {
                if let Ok(key) = k.parse() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.build()?)
        }
        "az" | "azure" | "abfs" | "abfss" | "adl" => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (k, v) in opts {
                if let Ok(key) = k.parse() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.build()?)
        }
        "http" | "https" => {
            let mut b = HttpBuilder::new().with_url(url.as_str());
            for (k, v) in opts {
                if let Ok(key) = k.parse() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.build()?)
        }
        other => {
            return Err(Error::Location { location: url.to_string(), message: format!("unsupported scheme `{other}`") })
        }
    };
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_stores_and_checks_keys() {
        let s3 = Url::parse("s3://bucket/").unwrap();
        let opts = vec![
            ("aws_endpoint".to_string(), "http://127.0.0.1:9".to_string()),
            ("allow_http".to_string(), "true".to_string()),
            ("aws_region".to_string(), "us-east-1".to_string()),
        ];
        build_store(&s3, &opts).unwrap();
        build_store(&Url::parse("file:///").unwrap(), &[]).unwrap();
        build_store(&Url::parse("memory:///").unwrap(), &[]).unwrap();
        let err = check_store_options(&s3, &[("aws_nonsense".into(), "1".into())]).unwrap_err().to_string();
        assert!(err.contains("`aws_nonsense`"), "{err}");
        let mixed = vec![("aws_region".to_string(), "x".to_string()), ("google_bucket".to_string(), "y".to_string())];
        assert_eq!(store_options_for(&s3, &mixed), mixed[..1]);
        assert!(store_options_for(&Url::parse("file:///").unwrap(), &mixed).is_empty());
        assert!(is_store_option("AWS_ACCESS_KEY_ID") && is_store_option("allow_http") && !is_store_option("classes"));
    }
}
