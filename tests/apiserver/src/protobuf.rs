//! Decoding of the Kubernetes protobuf request bodies kubectl's typed clients send (`kubectl
//! create secret|configmap|namespace`, `kubectl auth can-i`). Responses are always JSON, which
//! clients accept. Unknown kinds are answered with 415.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// The envelope's magic prefix.
pub const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bytes,
    Int,
    Bool,
    Msg(&'static [Field]),
    MapStr,
    MapBytes,
    RepStr,
    RepMsg(&'static [Field]),
    IntOrString,
}

struct Field(u32, &'static str, Ty);

// Field numbers from k8s.io/api and apimachinery generated.proto.
const OBJECT_META: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "generateName", Ty::Str),
    Field(3, "namespace", Ty::Str),
    Field(5, "uid", Ty::Str),
    Field(6, "resourceVersion", Ty::Str),
    Field(7, "generation", Ty::Int),
    Field(11, "labels", Ty::MapStr),
    Field(12, "annotations", Ty::MapStr),
    Field(14, "finalizers", Ty::RepStr),
];
const SECRET: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "data", Ty::MapBytes),
    Field(3, "type", Ty::Str),
    Field(4, "stringData", Ty::MapStr),
    Field(5, "immutable", Ty::Bool),
];
const CONFIG_MAP: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "data", Ty::MapStr),
    Field(3, "binaryData", Ty::MapBytes),
    Field(4, "immutable", Ty::Bool),
];
const NAMESPACE_SPEC: &[Field] = &[Field(1, "finalizers", Ty::RepStr)];
const NAMESPACE: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(NAMESPACE_SPEC)),
];
const SERVICE_ACCOUNT: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(4, "automountServiceAccountToken", Ty::Bool),
];
const RESOURCE_ATTRIBUTES: &[Field] = &[
    Field(1, "namespace", Ty::Str),
    Field(2, "verb", Ty::Str),
    Field(3, "group", Ty::Str),
    Field(4, "version", Ty::Str),
    Field(5, "resource", Ty::Str),
    Field(6, "subresource", Ty::Str),
    Field(7, "name", Ty::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[Field(1, "path", Ty::Str), Field(2, "verb", Ty::Str)];
const SSAR_SPEC: &[Field] = &[
    Field(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    Field(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
];
const SSAR: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(SSAR_SPEC)),
];
const SERVICE_PORT: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "protocol", Ty::Str),
    Field(3, "port", Ty::Int),
    Field(4, "targetPort", Ty::IntOrString),
    Field(5, "nodePort", Ty::Int),
    Field(6, "appProtocol", Ty::Str),
];
const SERVICE_SPEC: &[Field] = &[
    Field(1, "ports", Ty::RepMsg(SERVICE_PORT)),
    Field(2, "selector", Ty::MapStr),
    Field(3, "clusterIP", Ty::Str),
    Field(4, "type", Ty::Str),
    Field(5, "externalIPs", Ty::RepStr),
    Field(7, "sessionAffinity", Ty::Str),
    Field(8, "loadBalancerIP", Ty::Str),
    Field(10, "externalName", Ty::Str),
    Field(18, "clusterIPs", Ty::RepStr),
];
const SERVICE: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(SERVICE_SPEC)),
];
const POLICY_RULE: &[Field] = &[
    Field(1, "verbs", Ty::RepStr),
    Field(2, "apiGroups", Ty::RepStr),
    Field(3, "resources", Ty::RepStr),
    Field(4, "resourceNames", Ty::RepStr),
    Field(5, "nonResourceURLs", Ty::RepStr),
];
const ROLE: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "rules", Ty::RepMsg(POLICY_RULE)),
];
const SUBJECT: &[Field] = &[
    Field(1, "kind", Ty::Str),
    Field(2, "apiGroup", Ty::Str),
    Field(3, "name", Ty::Str),
    Field(4, "namespace", Ty::Str),
];
const ROLE_REF: &[Field] = &[
    Field(1, "apiGroup", Ty::Str),
    Field(2, "kind", Ty::Str),
    Field(3, "name", Ty::Str),
];
const BINDING: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "subjects", Ty::RepMsg(SUBJECT)),
    Field(3, "roleRef", Ty::Msg(ROLE_REF)),
];
const INT_OR_STRING: &[Field] = &[
    Field(1, "type", Ty::Int),
    Field(2, "intVal", Ty::Int),
    Field(3, "strVal", Ty::Str),
];
const SSRR_SPEC: &[Field] = &[Field(1, "namespace", Ty::Str)];
const SSRR: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(SSRR_SPEC)),
];
const BOUND_OBJECT_REFERENCE: &[Field] = &[
    Field(1, "kind", Ty::Str),
    Field(2, "apiVersion", Ty::Str),
    Field(3, "name", Ty::Str),
    Field(4, "uid", Ty::Str),
];
const TOKEN_REQUEST_SPEC: &[Field] = &[
    Field(1, "audiences", Ty::RepStr),
    Field(3, "boundObjectRef", Ty::Msg(BOUND_OBJECT_REFERENCE)),
    Field(4, "expirationSeconds", Ty::Int),
];
const TOKEN_REQUEST: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(TOKEN_REQUEST_SPEC)),
];
const TYPE_META: &[Field] = &[Field(1, "apiVersion", Ty::Str), Field(2, "kind", Ty::Str)];
const UNKNOWN: &[Field] = &[
    Field(1, "typeMeta", Ty::Msg(TYPE_META)),
    Field(2, "raw", Ty::Bytes),
];

fn schema(kind: &str) -> Option<&'static [Field]> {
    Some(match kind {
        "Secret" => SECRET,
        "ConfigMap" => CONFIG_MAP,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "SelfSubjectAccessReview" => SSAR,
        "SelfSubjectRulesReview" => SSRR,
        "SelfSubjectReview" => &[Field(1, "metadata", Ty::Msg(OBJECT_META))],
        "Service" => SERVICE,
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => BINDING,
        "TokenRequest" => TOKEN_REQUEST,
        _ => return None,
    })
}

fn malformed() -> ApiError {
    ApiError::bad_request("the body of the request was in an unknown format: malformed protobuf")
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or_else(malformed)?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        if n > self.0.len() {
            return Err(malformed());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    /// Next (field number, wire type, payload for length-delimited or varint value).
    fn next(&mut self) -> Result<Option<(u32, Payload<'a>)>, ApiError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let payload = match key & 7 {
            0 => Payload::Varint(self.varint()?),
            1 => Payload::Skip(self.take(8)?),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| malformed())?;
                Payload::Bytes(self.take(n)?)
            }
            5 => Payload::Skip(self.take(4)?),
            _ => return Err(malformed()),
        };
        Ok(Some(((key >> 3) as u32, payload)))
    }
}

enum Payload<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Skip(#[allow(dead_code)] &'a [u8]),
}

fn text(b: &[u8]) -> Value {
    json!(String::from_utf8_lossy(b))
}

fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), ApiError> {
    let mut r = Reader(b);
    let (mut k, mut v) = (String::new(), json!(""));
    while let Some((n, p)) = r.next()? {
        if let Payload::Bytes(x) = p {
            match n {
                1 => k = String::from_utf8_lossy(x).into_owned(),
                2 => {
                    v = if bytes_value {
                        json!(B64.encode(x))
                    } else {
                        text(x)
                    }
                }
                _ => {}
            }
        }
    }
    Ok((k, v))
}

fn decode(b: &[u8], fields: &[Field]) -> Result<Value, ApiError> {
    let mut out = Map::new();
    let mut r = Reader(b);
    while let Some((n, p)) = r.next()? {
        let Some(Field(_, name, ty)) = fields.iter().find(|f| f.0 == n) else {
            continue;
        };
        let name = name.to_string();
        match (ty, p) {
            // gogo-protobuf writes empty strings and zeros explicitly: they mean "unset".
            (Ty::Str, Payload::Bytes([])) => {}
            (Ty::Int, Payload::Varint(0)) => {}
            (Ty::Str, Payload::Bytes(x)) => {
                out.insert(name, text(x));
            }
            (Ty::Bytes, Payload::Bytes(x)) => {
                out.insert(name, json!(B64.encode(x)));
            }
            (Ty::Int, Payload::Varint(v)) => {
                out.insert(name, json!(v as i64));
            }
            (Ty::Bool, Payload::Varint(v)) => {
                out.insert(name, json!(v != 0));
            }
            (Ty::Msg(sub), Payload::Bytes(x)) => {
                out.insert(name, decode(x, sub)?);
            }
            (Ty::MapStr | Ty::MapBytes, Payload::Bytes(x)) => {
                let (k, v) = map_entry(x, matches!(ty, Ty::MapBytes))?;
                out.entry(name).or_insert_with(|| json!({}))[k] = v;
            }
            (Ty::RepMsg(sub), Payload::Bytes(x)) => {
                let item = decode(x, sub)?;
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(item);
                }
            }
            (Ty::IntOrString, Payload::Bytes(x)) => {
                let v = decode(x, INT_OR_STRING)?;
                let value = if v["type"] == json!(1) {
                    v["strVal"].clone()
                } else {
                    json!(v["intVal"].as_i64().unwrap_or(0))
                };
                out.insert(name, value);
            }
            (Ty::RepStr, Payload::Bytes(x)) => {
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(text(x));
                }
            }
            _ => return Err(malformed()),
        }
    }
    Ok(Value::Object(out))
}

/// Decode an enveloped protobuf object into its JSON form.
pub fn to_json(body: &[u8]) -> Result<Value, ApiError> {
    let inner = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let unknown = decode(inner, UNKNOWN)?;
    let kind = unknown["typeMeta"]["kind"].as_str().unwrap_or("");
    let api_version = unknown["typeMeta"]["apiVersion"].as_str().unwrap_or("");
    let fields = schema(kind).ok_or_else(|| {
        let mut e = ApiError::bad_request(format!(
            "the stand-in API server cannot decode protobuf {kind} objects; send application/json"
        ));
        e.code = 415;
        e.reason = "UnsupportedMediaType";
        e
    })?;
    let raw = B64
        .decode(unknown["raw"].as_str().unwrap_or(""))
        .map_err(|_| malformed())?;
    let mut obj = decode(&raw, fields)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_secret() {
        let meta = [
            field(1, b"x"),
            field(2, b""),
            field(3, b"ns"),
            field(11, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let secret = [
            field(1, &meta),
            field(2, &[field(1, b"a"), field(2, b"\x00\x01")].concat()),
            field(3, b"Opaque"),
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        let mut body = MAGIC.to_vec();
        body.extend([field(1, &tm), field(2, &secret)].concat());
        let obj = to_json(&body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": "x", "namespace": "ns", "labels": {"k": "v"}}, "data": {"a": "AAE="}})
        );
    }
}
