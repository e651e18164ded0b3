//! Discovery documents (`/version`, `/api`, `/apis`, resource lists) and the minimal OpenAPI v3
//! documents kubectl needs to know that the server does field validation itself.

use serde_json::{Value, json};

use crate::kinds::{self, Kind};

/// The Kubernetes version the stand-in reports.
pub const MAJOR: &str = "1";
pub const MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0-kwg"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

fn group_doc(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = kinds::groups()
        .into_iter()
        .map(|(g, v)| group_doc(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = kinds::groups().into_iter().find(|(g, _)| *g == group)?;
    let mut doc = group_doc(g, v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

fn resource_entry(k: &Kind) -> Value {
    let mut r = json!({
        "name": k.plural,
        "singularName": k.singular,
        "namespaced": k.namespaced,
        "kind": k.kind,
        "verbs": k.verbs,
    });
    if !k.short_names.is_empty() {
        r["shortNames"] = json!(k.short_names);
    }
    if !k.categories.is_empty() {
        r["categories"] = json!(k.categories);
    }
    r
}

/// `APIResourceList` for a group/version, or None when it is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let ks = kinds::in_group_version(group, version)?;
    let mut resources = Vec::new();
    for k in &ks {
        resources.push(resource_entry(k));
        for sub in k.subresources {
            let mut r = json!({
                "name": format!("{}/{sub}", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["get", "patch", "update"],
            });
            if *sub == "log" {
                r["verbs"] = json!(["get"]);
            }
            if *sub == "token" {
                r["group"] = json!("authentication.k8s.io");
                r["version"] = json!("v1");
                r["kind"] = json!("TokenRequest");
                r["verbs"] = json!(["create"]);
            }
            if *sub == "scale" {
                r["group"] = json!("autoscaling");
                r["version"] = json!("v1");
                r["kind"] = json!("Scale");
            }
            resources.push(r);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// Path of a group/version in OpenAPI v3 (`api/v1`, `apis/apps/v1`).
fn oapi_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v2`: an empty document (no paths, no definitions), as protobuf (what kubectl asks
/// for) or JSON. kubectl falls back to it for kinds without a PATCH operation in /openapi/v3
/// (e.g. `kubectl create -f` of a SubjectAccessReview); it skips client-side validation of a
/// kind the document does not define, as for a CRD without a schema.
pub fn openapi_v2(accept: &str) -> (&'static str, Vec<u8>) {
    if accept.contains("protobuf") {
        // An empty protobuf message: openapi_v2.Document with every field unset.
        return (
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            Vec::new(),
        );
    }
    let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": format!("v{MAJOR}.{MINOR}.0")}, "paths": {}, "definitions": {}});
    (
        "application/json",
        serde_json::to_vec(&doc).unwrap_or_default(),
    )
}

/// `/openapi/v3`: the index of per-group/version documents.
pub fn openapi_v3_index() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(kinds::groups());
    for (g, v) in gvs {
        let p = oapi_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kwg{MINOR}")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api/v1|apis/g/v>`: PATCH operations that declare the `fieldValidation`
/// parameter (and no strategic-merge request body, so kubectl computes patches from its
/// built-in types).
pub fn openapi_v3_doc(path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let ks = kinds::in_group_version(group, version)?;
    let prefix = format!("/{}", oapi_path(group, version));
    let mut paths = serde_json::Map::new();
    for k in ks.iter().filter(|k| k.verbs.contains(&"patch")) {
        let p = if k.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", k.plural)
        } else {
            format!("{prefix}/{}/{{name}}", k.plural)
        };
        paths.insert(
            p,
            json!({"patch": {
                "operationId": format!("patch{}", k.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind},
                "parameters": [
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{MAJOR}.{MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
