//! What a reload attempt read, as one fingerprint: the config's text (or
//! why it could not be read) and the files it names (each certificate and
//! key, or why it could not be read). The watcher reloads only when the
//! fingerprint differs from the last attempt's, valid or not: a file left
//! invalid is tried once, not at every event in its directory, and putting
//! the last good content back is a change like any other.

use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3Default;

/// The fingerprint of the config at `path`, read as `text`.
pub(super) fn fingerprint(path: &Path, text: &Result<String, String>) -> u64 {
    let mut hash = Xxh3Default::new();
    match text {
        Ok(text) => {
            hash.update(b"text\0");
            hash.update(text.as_bytes());
            for file in named_files(path, text) {
                hash.update(file.as_os_str().as_encoded_bytes());
                match std::fs::read(&file) {
                    Ok(bytes) => {
                        hash.update(b"\0read\0");
                        hash.update(&bytes);
                    }
                    Err(error) => hash.update(format!("\0{:?}\0", error.kind()).as_bytes()),
                }
            }
        }
        Err(error) => {
            hash.update(b"error\0");
            hash.update(error.as_bytes());
        }
    }
    hash.digest()
}

/// The certificate and key files the config names, resolved from its
/// directory as `config::load` resolves them; none when it is not TOML.
fn named_files(path: &Path, text: &str) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let Ok(doc) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    let listeners = doc.get("listener").and_then(toml::Value::as_array);
    let pairs = listeners
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("tls")?.get("certificates")?.as_array())
        .flatten();
    pairs
        .flat_map(|pair| ["cert", "key"].map(|k| pair.get(k).and_then(toml::Value::as_str)))
        .flatten()
        .map(|name| dir.join(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_file_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fulcrum.toml");
        let text = Ok("[[listener]]\nname = \"s\"\nbind = \"127.0.0.1:0\"\n\
             [listener.tls]\ncertificates = [{ cert = \"c.pem\", key = \"k.pem\" }]\n"
            .to_owned());
        assert_eq!(
            named_files(&path, text.as_deref().unwrap()),
            [dir.path().join("c.pem"), dir.path().join("k.pem")]
        );
        let missing = fingerprint(&path, &text);
        assert_eq!(missing, fingerprint(&path, &text), "the same inputs");
        std::fs::write(dir.path().join("c.pem"), "one").unwrap();
        let one = fingerprint(&path, &text);
        assert_ne!(one, missing);
        std::fs::write(dir.path().join("c.pem"), "two").unwrap();
        assert_ne!(fingerprint(&path, &text), one);
        let other = Ok("# another text".to_owned());
        assert_ne!(fingerprint(&path, &other), fingerprint(&path, &text));
        let unreadable = Err("cannot read".to_owned());
        assert_ne!(fingerprint(&path, &unreadable), fingerprint(&path, &other));
    }
}
