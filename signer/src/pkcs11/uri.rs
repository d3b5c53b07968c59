//! The `pkcs11:` URI (RFC 7512) naming a key in a token: which token, which object, the PIN
//! and the module. Only the attributes Tandem acts on are accepted; any other is refused rather
//! than ignored, so a filter the operator wrote can never silently select another key.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::percent_decode_str;
use zeroize::Zeroizing;

use super::error::Pkcs11Error;

/// The scheme that marks a key argument as a token key rather than a key file.
pub const SCHEME: &str = "pkcs11:";

/// Where the token's PIN comes from, when the URI says.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `pin-value=`: the PIN itself (visible in process listings: prefer a file).
    Value(Zeroizing<String>),
    /// `pin-source=file:PATH` (or a bare path): the file's first line.
    File(PathBuf),
}

/// A parsed `pkcs11:` URI: the token filters (all must match), the key object (by label,
/// id or both), and the optional PIN and module.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `serial=`: the token serial number.
    pub serial: Option<String>,
    /// `manufacturer=`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `model=`: the token model.
    pub model: Option<String>,
    /// `object=`: the key's label (`CKA_LABEL`).
    pub object: Option<String>,
    /// `id=`: the key's id (`CKA_ID`), raw bytes (percent-encoded in the URI).
    pub id: Option<Vec<u8>>,
    /// `pin-value=` or `pin-source=`.
    pub pin: Option<PinSource>,
    /// `module-path=`: the PKCS#11 module (shared library) to load.
    pub module_path: Option<PathBuf>,
    /// The URI as written, with every query value and any PIN hidden, for messages.
    shown: String,
}

impl Pkcs11Uri {
    /// The URI for messages: as written, with the value of every query attribute (PIN, PIN
    /// file, module) and of any PIN-named path attribute replaced by `***`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn set(&mut self, name: &str, raw: &str) -> Result<(), String> {
        let text = || decode_text(name, raw);
        let taken = match name {
            "token" => self.token.replace(text()?).is_some(),
            "serial" => self.serial.replace(text()?).is_some(),
            "manufacturer" => self.manufacturer.replace(text()?).is_some(),
            "model" => self.model.replace(text()?).is_some(),
            "object" => self.object.replace(text()?).is_some(),
            "id" => self.id.replace(decode(raw)).is_some(),
            "type" if text()? == "private" => false,
            "type" => return Err("type= must be `private`: signing needs the private key".into()),
            "pin-value" => self
                .pin
                .replace(PinSource::Value(Zeroizing::new(text()?)))
                .is_some(),
            "pin-source" => self.pin.replace(pin_file(&text()?)).is_some(),
            "module-path" => self.module_path.replace(text()?.into()).is_some(),
            _ => {
                return Err(format!(
                    "unsupported attribute `{name}` (supported: {})",
                    SUPPORTED.join(", ")
                ))
            }
        };
        if taken {
            return Err(format!(
                "`{name}` given twice (or pin-value and pin-source both)"
            ));
        }
        Ok(())
    }
}

impl FromStr for Pkcs11Uri {
    type Err = Pkcs11Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown = redact(s);
        let bad = |reason: String| Pkcs11Error::Uri {
            uri: shown.clone(),
            reason,
        };
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad(format!("does not start with `{SCHEME}`")))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri {
            token: None,
            serial: None,
            manufacturer: None,
            model: None,
            object: None,
            id: None,
            pin: None,
            module_path: None,
            shown: shown.clone(),
        };
        let path_attrs = path.split(';').map(|a| (a, "path"));
        let query_attrs = query.split('&').map(|a| (a, "query"));
        for (attr, part) in path_attrs.chain(query_attrs).filter(|(a, _)| !a.is_empty()) {
            let (name, value) = attr.split_once('=').ok_or_else(|| {
                let shown = if part == "query" { "***" } else { attr };
                bad(format!("{part} attribute `{shown}` has no `=`"))
            })?;
            check_spelling(name).map_err(bad)?;
            check_part(name, part).map_err(bad)?;
            uri.set(name, value).map_err(bad)?;
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(bad("name the key with object=LABEL or id=%XX…".into()));
        }
        Ok(uri)
    }
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::Value(_) => f.write_str("PinSource::Value(***)"),
            PinSource::File(path) => write!(f, "PinSource::File({})", path.display()),
        }
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11Uri({})", self.shown)
    }
}

/// The attributes Tandem acts on.
const SUPPORTED: [&str; 10] = [
    "token",
    "serial",
    "manufacturer",
    "model",
    "object",
    "id",
    "type",
    "pin-value",
    "pin-source",
    "module-path",
];

/// An attribute name is written as RFC 7512 spells it: `PIN-VALUE` or `pin%2Dvalue` is
/// refused naming the plain form, rather than as an unknown attribute.
fn check_spelling(name: &str) -> Result<(), String> {
    let plain = String::from_utf8_lossy(&decode(name)).to_ascii_lowercase();
    if plain != name && SUPPORTED.contains(&plain.as_str()) {
        return Err(format!(
            "attribute names are written in lower case, unencoded: `{plain}`"
        ));
    }
    Ok(())
}

/// RFC 7512 puts the PIN and module in the query, everything else in the path.
fn check_part(name: &str, part: &str) -> Result<(), String> {
    let in_query = matches!(name, "pin-value" | "pin-source" | "module-path");
    match (in_query, part) {
        (true, "path") => Err(format!("`{name}` belongs in the query: pkcs11:…?{name}=…")),
        (false, "query") => Err(format!("`{name}` belongs in the path, before `?`")),
        _ => Ok(()),
    }
}

fn decode(raw: &str) -> Vec<u8> {
    percent_decode_str(raw).collect()
}

fn decode_text(name: &str, raw: &str) -> Result<String, String> {
    String::from_utf8(decode(raw)).map_err(|_| format!("`{name}` is not UTF-8 once decoded"))
}

/// `file:PATH`, `file://PATH` or a bare path (RFC 7512 §2.4 leaves the form open).
fn pin_file(source: &str) -> PinSource {
    let path = source
        .strip_prefix("file://")
        .or_else(|| source.strip_prefix("file:"))
        .unwrap_or(source);
    PinSource::File(path.into())
}

/// The URI with every secret hidden: the value of every query attribute (the PIN, the PIN
/// file, the module), and of a path attribute whose name, percent-decoded and case-folded,
/// is `pin-value` or `pin-source` (misplaced or misspelt, it is still a PIN). A query
/// attribute without `=` is hidden whole.
fn redact(s: &str) -> String {
    let (path, query) = match s.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (s, None),
    };
    let path = path
        .split(';')
        .map(|attr| match attr.split_once('=') {
            Some((name, _)) if is_pin_name(name) => format!("{name}=***"),
            _ => attr.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";");
    let Some(query) = query else { return path };
    let query = query
        .split('&')
        .map(redact_query_attr)
        .collect::<Vec<_>>()
        .join("&");
    format!("{path}?{query}")
}

/// A query attribute with its value hidden (whole, without `=`).
fn redact_query_attr(attr: &str) -> String {
    match attr.split_once('=') {
        Some((name, _)) => format!("{name}=***"),
        None if attr.is_empty() => String::new(),
        None => "***".into(),
    }
}

/// Whether an attribute name, however encoded or cased, names the PIN.
fn is_pin_name(name: &str) -> bool {
    let name = String::from_utf8_lossy(&decode(name)).to_ascii_lowercase();
    matches!(name.as_str(), "pin-value" | "pin-source")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_uri_parses_and_hides_its_pin() {
        let uri: Pkcs11Uri =
            "pkcs11:token=my%20hsm;object=release-1;id=%01%a0;type=private?pin-value=1234&module-path=/usr/lib/softhsm/libsofthsm2.so"
                .parse()
                .unwrap();
        assert_eq!(uri.token.as_deref(), Some("my hsm"));
        assert_eq!(uri.object.as_deref(), Some("release-1"));
        assert_eq!(uri.id.as_deref(), Some(&[0x01, 0xa0][..]));
        assert!(matches!(&uri.pin, Some(PinSource::Value(p)) if p.as_str() == "1234"));
        assert_eq!(
            uri.module_path,
            Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert!(!uri.shown().contains("1234"), "{}", uri.shown());
        assert!(uri.shown().contains("pin-value=***&module-path=***"));
        assert!(!format!("{uri:?}").contains("1234"));
    }

    #[test]
    fn a_pin_however_spelt_or_placed_never_shows() {
        for uri in [
            "pkcs11:object=k?PIN-VALUE=987654",
            "pkcs11:object=k?pin%2Dvalue=987654",
            "pkcs11:object=k?Pin-Source=/run/987654",
            "pkcs11:object=k;PIN-VALUE=987654",
            "pkcs11:object=k;pin%2dvalue=987654?module-path=/m.so",
            "pkcs11:object=k?987654",
            "pkcs11:object=k?x=1&987654",
        ] {
            let shown = redact(uri);
            assert!(!shown.contains("987654"), "{uri} shown as {shown}");
            let err = format!("{:?}", uri.parse::<Pkcs11Uri>());
            assert!(!err.contains("987654"), "{uri}: {err}");
        }
        assert_eq!(
            redact("pkcs11:object=k;token=t?pin-value=1&module-path=/m.so"),
            "pkcs11:object=k;token=t?pin-value=***&module-path=***"
        );
    }

    #[test]
    fn pin_source_forms() {
        for form in ["file:/run/pin", "file:///run/pin", "/run/pin"] {
            let uri: Pkcs11Uri = format!("pkcs11:object=k?pin-source={form}")
                .parse()
                .unwrap();
            assert_eq!(uri.pin, Some(PinSource::File("/run/pin".into())), "{form}");
        }
    }

    fn refusal(s: &str) -> String {
        match s.parse::<Pkcs11Uri>() {
            Err(Pkcs11Error::Uri { reason, .. }) => reason,
            other => panic!("{s}: expected a URI error, got {other:?}"),
        }
    }

    #[test]
    fn ambiguous_or_unknown_uris_are_refused() {
        assert!(refusal("pkcs11:token=t").contains("object=LABEL or id="));
        assert!(refusal("pkcs11:object=a;object=b").contains("given twice"));
        assert!(refusal("pkcs11:object=a;slot-id=3").contains("unsupported attribute `slot-id`"));
        assert!(refusal("pkcs11:object=a;type=public").contains("private"));
        assert!(refusal("pkcs11:object=a;pin-value=1").contains("belongs in the query"));
        assert!(refusal("pkcs11:object=a?token=t").contains("belongs in the path"));
        assert!(refusal("pkcs11:object").contains("has no `=`"));
        assert!(refusal("pkcs11:object=%ff").contains("not UTF-8"));
        assert!(
            refusal("pkcs11:object=a?PIN-VALUE=1").contains("lower case, unencoded: `pin-value`")
        );
        assert!(refusal("pkcs11:object=a?pin%2Dvalue=1").contains("`pin-value`"));
        assert!(refusal("pkcs11:object=a?pin-value=1&pin-source=/p").contains("given twice"));
    }
}
