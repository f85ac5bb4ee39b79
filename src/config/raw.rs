//! The raw layer: the file as toml's spanned document, read through typed
//! accessors that record every problem with its span and dotted key.
//!
//! We walk toml's spanned tree instead of deriving serde structs because serde
//! stops at the first error, and `fulcrum check` must report every error in
//! the file, each with the exact key path (`upstream.api.retries`) and the
//! line:column of the offending key or value.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem found in the file, before it is given a line and column.
#[derive(Debug, Clone)]
pub struct Issue {
    pub span: Range<usize>,
    pub key: String,
    pub message: String,
}

/// Collects issues while the document is walked.
#[derive(Debug, Default)]
pub struct Issues(pub Vec<Issue>);

/// A value read from the file with where it stood and its dotted key.
#[derive(Debug, Clone)]
pub struct Field<T> {
    pub value: T,
    pub span: Range<usize>,
    pub key: String,
}

/// A table of the document with its dotted path and span (the header for a
/// `[table]`, the braces for an inline table).
pub struct Table<'t, 'i> {
    table: &'t DeTable<'i>,
    pub span: Range<usize>,
    pub path: String,
}

impl Issues {
    pub fn push(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            span,
            key: key.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> Field<T> {
    /// Records an issue located at this field.
    pub fn fail(&self, issues: &mut Issues, message: impl Into<String>) {
        issues.push(self.span.clone(), self.key.clone(), message);
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Field<U> {
        Field {
            value: f(self.value),
            span: self.span,
            key: self.key,
        }
    }
}

impl<'t, 'i> Table<'t, 'i> {
    pub fn root(doc: &'t Spanned<DeTable<'i>>) -> Self {
        Self {
            table: doc.get_ref(),
            span: doc.span(),
            path: String::new(),
        }
    }

    /// An inline table found inside an array, with its own span and path.
    pub fn inline(table: &'t DeTable<'i>, span: Range<usize>, path: String) -> Self {
        Self { table, span, path }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v)
    }

    /// Reports every key not in `allowed`, at the key itself.
    pub fn deny_unknown(&self, allowed: &[&str], issues: &mut Issues) {
        for (key, _) in self.table.iter() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                issues.push(
                    key.span(),
                    self.child_path(key.get_ref()),
                    format!("unknown key; expected one of: {}", allowed.join(", ")),
                );
            }
        }
    }

    /// The entries of this table in file order, for tables keyed by name.
    pub fn entries(&self) -> impl Iterator<Item = (Field<&'t str>, &'t Spanned<DeValue<'i>>)> + '_ {
        self.table.iter().map(|(k, v)| {
            (
                Field {
                    value: k.get_ref().as_ref(),
                    span: k.span(),
                    key: self.child_path(k.get_ref()),
                },
                v,
            )
        })
    }

    /// Reports a missing required key at this table's header.
    pub fn missing(&self, key: &str, issues: &mut Issues) {
        issues.push(
            self.span.clone(),
            self.child_path(key),
            "required key is missing",
        );
    }

    /// A raw value with its dotted key.
    pub fn value(&self, key: &str) -> Option<Field<&'t DeValue<'i>>> {
        self.get(key).map(|v| Field {
            value: v.get_ref(),
            span: v.span(),
            key: self.child_path(key),
        })
    }

    pub fn string(&self, key: &str, issues: &mut Issues) -> Option<Field<&'t str>> {
        let field = self.value(key)?;
        match field.value {
            DeValue::String(s) => Some(field.map(|_| s.as_ref())),
            other => {
                field.fail(
                    issues,
                    format!("expected a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn required_string(&self, key: &str, issues: &mut Issues) -> Option<Field<&'t str>> {
        if self.get(key).is_none() {
            self.missing(key, issues);
            return None;
        }
        self.string(key, issues)
    }

    pub fn bool(&self, key: &str, issues: &mut Issues) -> Option<bool> {
        let field = self.value(key)?;
        match field.value {
            DeValue::Boolean(b) => Some(*b),
            other => {
                field.fail(
                    issues,
                    format!("expected true or false, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An integer within `range`.
    pub fn int(&self, key: &str, range: Range<i64>, issues: &mut Issues) -> Option<Field<i64>> {
        let field = self.value(key)?;
        let parsed = match field.value {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            other => {
                field.fail(
                    issues,
                    format!("expected an integer, found {}", type_name(other)),
                );
                return None;
            }
        };
        match parsed {
            Some(n) if range.contains(&n) => Some(field.map(|_| n)),
            _ => {
                field.fail(
                    issues,
                    format!("must be between {} and {}", range.start, range.end - 1),
                );
                None
            }
        }
    }

    /// A number (integer or float).
    pub fn float(&self, key: &str, issues: &mut Issues) -> Option<Field<f64>> {
        let field = self.value(key)?;
        let parsed = match field.value {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            other => {
                field.fail(
                    issues,
                    format!("expected a number, found {}", type_name(other)),
                );
                return None;
            }
        };
        match parsed {
            Some(x) if x.is_finite() => Some(field.map(|_| x)),
            _ => {
                field.fail(issues, "must be a finite number");
                None
            }
        }
    }

    /// A string parsed by `parse`, whose error becomes the issue's reason.
    pub fn parsed<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        issues: &mut Issues,
    ) -> Option<Field<T>> {
        let field = self.string(key, issues)?;
        match parse(field.value) {
            Ok(v) => Some(field.map(|_| v)),
            Err(why) => {
                field.fail(issues, why);
                None
            }
        }
    }

    /// A sub-table (`[a.b]` or `b = { .. }`).
    pub fn table(&self, key: &str, issues: &mut Issues) -> Option<Table<'t, 'i>> {
        let value = self.get(key)?;
        as_table(value, self.child_path(key), issues)
    }

    /// An array, each element with its dotted key `key[i]`.
    pub fn array(
        &self,
        key: &str,
        issues: &mut Issues,
    ) -> Option<Field<Vec<Field<&'t DeValue<'i>>>>> {
        let field = self.value(key)?;
        match field.value {
            DeValue::Array(items) => {
                let elements = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Field {
                        value: v.get_ref(),
                        span: v.span(),
                        key: format!("{}[{i}]", field.key),
                    })
                    .collect();
                Some(field.map(|_| elements))
            }
            other => {
                field.fail(
                    issues,
                    format!("expected an array, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An array of tables (`[[listener]]` or `[ {..}, {..} ]`).
    pub fn tables(&self, key: &str, issues: &mut Issues) -> Vec<Table<'t, 'i>> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let path = self.child_path(key);
        match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| as_table(v, format!("{path}[{i}]"), issues))
                .collect(),
            other => {
                issues.push(
                    value.span(),
                    path,
                    format!("expected an array of tables, found {}", type_name(other)),
                );
                Vec::new()
            }
        }
    }
}

/// Reads a value as a table, recording an issue when it is not one.
pub fn as_table<'t, 'i>(
    value: &'t Spanned<DeValue<'i>>,
    path: String,
    issues: &mut Issues,
) -> Option<Table<'t, 'i>> {
    match value.get_ref() {
        DeValue::Table(table) => Some(Table {
            table,
            span: value.span(),
            path,
        }),
        other => {
            issues.push(
                value.span(),
                path,
                format!("expected a table, found {}", type_name(other)),
            );
            None
        }
    }
}

/// A string array element, recording an issue when it is not one.
pub fn element_str<'t>(field: &Field<&'t DeValue<'_>>, issues: &mut Issues) -> Option<&'t str> {
    match field.value {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            field.fail(
                issues,
                format!("expected a string, found {}", type_name(other)),
            );
            None
        }
    }
}

pub fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The dotted key of the innermost entry whose key or value contains `offset`,
/// used to name the key of a syntax error.
pub fn key_at(doc: &DeTable<'_>, offset: usize) -> Option<String> {
    fn walk(table: &DeTable<'_>, offset: usize, path: &str) -> Option<String> {
        for (key, value) in table.iter() {
            let here = if path.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{path}.{}", key.get_ref())
            };
            if key.span().contains(&offset) {
                return Some(here);
            }
            if value.span().contains(&offset) || value.span().end == offset {
                return Some(walk_value(value.get_ref(), offset, &here).unwrap_or(here));
            }
        }
        None
    }
    fn walk_value(value: &DeValue<'_>, offset: usize, path: &str) -> Option<String> {
        match value {
            DeValue::Table(t) => walk(t, offset, path),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
                let here = format!("{path}[{i}]");
                (v.span().contains(&offset))
                    .then(|| walk_value(v.get_ref(), offset, &here).unwrap_or(here))
            }),
            _ => None,
        }
    }
    walk(doc, offset, "")
}
