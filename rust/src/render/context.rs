//! Turns a recipient's MessagePack vars into the template context.

use std::collections::BTreeMap;

use minijinja::value::Value;
use rmpv::Value as Mp;

/// Converts the recipient's `vars` map; an unusable value fails this recipient only.
pub fn vars_to_context(vars: &Mp) -> Result<BTreeMap<String, Value>, String> {
    match vars {
        Mp::Nil => Ok(BTreeMap::new()),
        Mp::Map(entries) => entries
            .iter()
            .map(|(k, v)| {
                let key = k
                    .as_str()
                    .ok_or_else(|| format!("variable names must be strings, got {k}"))?;
                Ok((
                    key.to_string(),
                    to_value(v).map_err(|e| format!("{key}: {e}"))?,
                ))
            })
            .collect(),
        other => Err(format!("vars must be a map, got {other}")),
    }
}

fn to_value(v: &Mp) -> Result<Value, String> {
    Ok(match v {
        Mp::Nil => Value::from(()),
        Mp::Boolean(b) => Value::from(*b),
        Mp::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Value::from(n),
            (None, Some(n)) => Value::from(n),
            _ => return Err(format!("integer {i} out of range")),
        },
        Mp::F32(f) => Value::from(f64::from(*f)),
        Mp::F64(f) => Value::from(*f),
        Mp::String(s) => Value::from(s.as_str().ok_or("string is not valid UTF-8")?),
        Mp::Binary(b) => Value::from_bytes(b.clone()),
        Mp::Array(items) => Value::from(items.iter().map(to_value).collect::<Result<Vec<_>, _>>()?),
        Mp::Map(_) => Value::from(vars_to_context(v)?),
        Mp::Ext(tag, _) => {
            return Err(format!(
                "unsupported value (MessagePack extension type {tag})"
            ))
        }
    })
}
