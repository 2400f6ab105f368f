//! `switchboard tenants list|get|apply|delete`: the tenant API (`/api/tenants`) for the
//! operator. `apply` takes a TOML (or JSON) file with the fields of a `[[tenants]]` table,
//! one tenant at its top level or several as `[[tenants]]`, and creates or updates each.

use std::path::Path;

use serde_json::Value;

use super::{Failure, Target, call, columns, text};

/// One `tenants` command.
pub enum Action<'a> {
    /// Every tenant of the node.
    List,
    /// One tenant's settings (secrets hidden).
    Get { name: &'a str },
    /// Create or update the tenants in a file.
    Apply { file: &'a Path },
    /// Delete a tenant: its connections close, its state goes.
    Delete { name: &'a str },
}

/// Runs one command against `target`; what to print.
pub async fn act(target: &Target, action: Action<'_>) -> Result<String, Failure> {
    match action {
        Action::List => {
            let list = call(target, "GET", "/api/tenants", Vec::new()).await?;
            let tenants = list["tenants"]
                .as_array()
                .ok_or_else(|| Failure::Unreachable(format!("not a tenant list: {list}")))?;
            Ok(table(tenants))
        }
        Action::Get { name } => {
            let tenant = call(target, "GET", &format!("/api/tenants/{name}"), Vec::new()).await?;
            serde_json::to_string_pretty(&tenant)
                .map_err(|error| Failure::Unreachable(error.to_string()))
        }
        Action::Apply { file } => {
            let tenants = read_tenants(file)?;
            let mut lines = Vec::new();
            for tenant in tenants {
                let name = tenant["name"].as_str().map(str::to_owned).ok_or_else(|| {
                    Failure::Refused(format!("{}: a tenant without a `name`", file.display()))
                })?;
                let body = serde_json::to_vec(&tenant)
                    .map_err(|error| Failure::Unreachable(error.to_string()))?;
                let answer = call(target, "PUT", &format!("/api/tenants/{name}"), body)
                    .await
                    .map_err(|failure| match failure {
                        Failure::Refused(message) => Failure::Refused(format!("{name}: {message}")),
                        other => other,
                    })?;
                lines.push(format!("applied {name} ({})", text(&answer["source"])));
            }
            Ok(lines.join("\n"))
        }
        Action::Delete { name } => {
            let answer = call(
                target,
                "DELETE",
                &format!("/api/tenants/{name}"),
                Vec::new(),
            )
            .await?;
            Ok(format!(
                "deleted {name} ({} connection(s) closed here)",
                text(&answer["connections_closed"])
            ))
        }
    }
}

/// The tenants a file describes: its top-level table, or each of its `[[tenants]]`.
fn read_tenants(file: &Path) -> Result<Vec<Value>, Failure> {
    let unreadable = |error: &dyn std::fmt::Display| {
        Failure::Unreachable(format!("cannot read {}: {error}", file.display()))
    };
    let text = std::fs::read_to_string(file).map_err(|error| unreadable(&error))?;
    let value: Value = if file
        .extension()
        .is_some_and(|extension| extension == "json")
    {
        serde_json::from_str(&text).map_err(|error| unreadable(&error))?
    } else {
        let table: toml::Table = toml::from_str(&text).map_err(|error| unreadable(&error))?;
        serde_json::to_value(table).map_err(|error| unreadable(&error))?
    };
    match value.get("tenants") {
        Some(Value::Array(tenants)) if value.get("name").is_none() => Ok(tenants.clone()),
        _ => Ok(vec![value]),
    }
}

/// The tenant list as aligned columns.
fn table(tenants: &[Value]) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "SOURCE".to_owned(),
        "PROTOCOL".to_owned(),
        "CONNECTIONS".to_owned(),
        "PLUGINS".to_owned(),
    ]];
    for tenant in tenants {
        rows.push([
            text(&tenant["name"]),
            text(&tenant["source"]),
            text(&tenant["protocol"]),
            text(&tenant["connections"]),
            text(&tenant["plugins"]),
        ]);
    }
    columns(&rows)
}
