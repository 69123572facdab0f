//! Typed reads out of a JSON object of options, each error naming the option with its path.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Reads typed options out of one JSON object; `prefix` is the object's path (`""`,
/// `"options."`, `"options.redisOptions."`, `"redlockOptions."`, `"redlockNodes[1]."`, ...).
pub(crate) struct Reader<'a> {
    pub(crate) obj: &'a Map<String, Value>,
    pub(crate) prefix: String,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(obj: &'a Map<String, Value>, prefix: impl Into<String>) -> Self {
        Reader {
            obj,
            prefix: prefix.into(),
        }
    }

    /// The option's full name, for messages.
    pub(crate) fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value, unless absent or `null` (which means "the default").
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// The value as given, `null` included.
    pub(crate) fn raw(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key)
    }

    fn wrong(&self, key: &str, what: &str, v: &Value) -> Error {
        Error::config(format!(
            "option `{}` must be {what}, got {}",
            self.name(key),
            describe(v)
        ))
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "a boolean", other)),
        }
    }

    pub(crate) fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.wrong(key, "a finite number", other)),
        }
    }

    pub(crate) fn integer(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_f64().filter(|n| n.fract() == 0.0) {
            Some(n) if n >= min as f64 && n <= max as f64 => Ok(Some(n as i64)),
            _ => Err(self.wrong(key, &format!("an integer from {min} to {max}"), v)),
        }
    }

    pub(crate) fn millis(&self, key: &str, min: u64) -> Result<Option<Duration>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_f64() {
            Some(n) if n >= min as f64 && n <= 2_147_483_647.0 => {
                Ok(Some(Duration::from_micros((n * 1000.0).round() as u64)))
            }
            _ => Err(self.wrong(key, &format!("a number of milliseconds >= {min}"), v)),
        }
    }

    /// True when a function was given (the binding holds it; the JSON carries a marker).
    pub(crate) fn function(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(v) if is_function(v) => Ok(true),
            Some(other) => Err(self.wrong(key, "a function", other)),
        }
    }

    /// A port: a number or a numeric string in 1..=65535.
    pub(crate) fn port(&self, key: &str) -> Result<Option<u16>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let bad = || self.wrong(key, "a port number (1-65535) or a numeric string", v);
        let n = match v {
            Value::Number(n) => n.as_f64().ok_or_else(bad)?,
            Value::String(s) if !s.trim().is_empty() => {
                s.trim().parse::<f64>().map_err(|_| bad())?
            }
            _ => return Err(bad()),
        };
        if n.fract() != 0.0 || !(1.0..=65535.0).contains(&n) {
            return Err(bad());
        }
        Ok(Some(n as u16))
    }

    /// PEM text: a string, or several (an array), joined.
    pub(crate) fn pem(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )),
            Some(other) => Err(self.wrong(key, "PEM text or a Buffer", other)),
        }
    }

    /// An object of options (its reader, its path after this one's).
    pub(crate) fn object(&self, key: &str) -> Result<Option<Reader<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(Reader::new(o, format!("{}.", self.name(key))))),
            Some(other) => Err(self.wrong(key, "an object", other)),
        }
    }
}

pub(crate) fn is_function(v: &Value) -> bool {
    v.get("$fn").is_some_and(|f| f == &Value::Bool(true))
}

/// Describes a value for an error message without echoing long or secret content.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() <= 32 => format!("{s:?}"),
        Value::String(_) => "a long string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) if is_function(v) => "a function".into(),
        Value::Object(o) => match o.get("$number").and_then(Value::as_str) {
            Some(n) => n.to_owned(),
            None => "an object".into(),
        },
    }
}
