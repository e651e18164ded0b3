//! CEL as Kubernetes admission uses it: the `cel` crate with the standard library, optional
//! types and the strings extension (Kubernetes' `ext.Strings`), and no base64 (`ext.Encoders`
//! is not in Kubernetes' CEL environment). Objects are bound as the real server binds them:
//! the unstructured (JSON) form, so a Secret's `data` values are base64 *strings*.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value as Json;

/// A compiled expression.
pub struct Program(::cel::Program);

/// A compile or evaluation error, worded for a policy author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelError(pub String);

fn env() -> Arc<::cel::Env> {
    static ENV: OnceLock<Arc<::cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = ::cel::Env::stdlib();
        env.add_extension(::cel::extensions::strings)
            .expect("the strings extension registers once");
        Arc::new(env)
    })
    .clone()
}

/// Compile `source`.
pub fn compile(source: &str) -> Result<Program, CelError> {
    env()
        .compile(source)
        .map(Program)
        .map_err(|e| CelError(format!("compilation failed: {e}")))
}

/// Variables of one evaluation, by name (`object`, `request`, `variables`, ...).
#[derive(Default)]
pub struct Activation {
    vars: HashMap<String, ::cel::Value>,
}

impl Activation {
    pub fn bind(&mut self, name: &str, value: &Json) {
        self.vars.insert(name.to_string(), to_cel(value));
    }

    pub fn bind_value(&mut self, name: &str, value: ::cel::Value) {
        self.vars.insert(name.to_string(), value);
    }
}

impl Program {
    pub fn eval(&self, act: &Activation) -> Result<::cel::Value, CelError> {
        let mut ctx = ::cel::Context::with_env(env());
        for (k, v) in &act.vars {
            ctx.add_variable_from_value(k.as_str(), v.clone());
        }
        self.0.execute(&ctx).map_err(|e| CelError(e.to_string()))
    }
}

/// JSON to CEL the way Kubernetes' unstructured values are: integers are `int`, other
/// numbers `double`, and strings stay strings (also base64 `bytes` fields).
pub fn to_cel(v: &Json) -> ::cel::Value {
    match v {
        Json::Null => ::cel::Value::Null,
        Json::Bool(b) => ::cel::Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => ::cel::Value::Int(i),
            None => ::cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => ::cel::Value::String(Arc::new(s.clone())),
        Json::Array(a) => ::cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Json::Object(m) => {
            let map: HashMap<String, ::cel::Value> =
                m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            map.into()
        }
    }
}

/// A CEL `bool`, if it is one.
pub fn as_bool(v: &::cel::Value) -> Option<bool> {
    match v {
        ::cel::Value::Bool(b) => Some(*b),
        _ => None,
    }
}

/// A CEL `string`, if it is one.
pub fn as_string(v: &::cel::Value) -> Option<String> {
    match v {
        ::cel::Value::String(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(src: &str, obj: Json) -> Result<::cel::Value, CelError> {
        let mut a = Activation::default();
        a.bind("object", &obj);
        compile(src)?.eval(&a)
    }

    #[test]
    fn secret_data_is_a_base64_string_and_there_is_no_base64_library() {
        let s = json!({"type": "kwg.io/peer", "data": {"owner": "ZGV2ZWxvcGVy"}});
        assert_eq!(
            eval("object.data.owner == 'ZGV2ZWxvcGVy'", s.clone()).unwrap(),
            true.into()
        );
        assert!(eval("base64.decode(object.data.owner)", s).is_err());
    }

    /// `dyn(object)`: what a policy reading Secret data writes so that Kubernetes' type
    /// checker (which sees `bytes` there) does not warn; the value is unchanged.
    #[test]
    fn dyn_keeps_the_value_and_optionals_work_through_it() {
        let s = json!({"type": "kwg.io/peer", "data": {"owner": "ZGV2ZWxvcGVy"}});
        for (src, want) in [
            (
                "dyn(object).?data.?owner.orValue('') == 'ZGV2ZWxvcGVy'",
                true,
            ),
            ("dyn(object).?data.?publicKey.orValue('') == ''", true),
            (
                "dyn(object).?data.orValue({}).all(k, size(dyn(object).data[k]) <= 12)",
                true,
            ),
            ("dyn(object).?missing.?owner.orValue('x') == 'x'", true),
        ] {
            assert_eq!(eval(src, s.clone()), Ok(want.into()), "{src}");
        }
    }

    #[test]
    fn strings_extension_optionals_and_macros() {
        let o = json!({"metadata": {"name": "kwg-peer-a", "labels": {"x": "1"}}, "n": 3});
        for (src, want) in [
            ("object.metadata.name.startsWith('kwg-peer-')", true),
            (
                "'abc'.split('').map(c, 'abc'.indexOf(c)) == [0, 1, 2]",
                true,
            ),
            ("['a', 'b'].join() == 'ab' && 'xyz'.charAt(1) == 'y'", true),
            ("object.metadata.?annotations.orValue({}).size() == 0", true),
            ("has(object.metadata.labels) && object.n / 2 == 1", true),
            ("object.metadata.labels.all(k, k == 'x')", true),
        ] {
            assert_eq!(eval(src, o.clone()), Ok(want.into()), "{src}");
        }
        assert!(compile("object.(").is_err());
        assert!(eval("object.missing == 1", o).is_err());
    }
}
