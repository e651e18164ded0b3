//! `pods/log` (`kubectl logs [-f]`): the embedding program says where a container's log file
//! is; the server serves it, optionally following appended output.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::Shared;
use crate::kinds::find;
use crate::status::ApiError;

/// Where the log of (namespace, pod, container) is, if anywhere.
pub type LogSource = Arc<dyn Fn(&str, &str, &str) -> Option<PathBuf> + Send + Sync>;

/// How often a followed log is checked for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What `kubectl logs` asked for.
pub struct LogRequest<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub follow: bool,
    pub tail_lines: Option<usize>,
}

/// The container to show: the requested one, or the only one.
fn pick_container(pod: &Value, name: &str, wanted: &str) -> Result<String, ApiError> {
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match (wanted, names.as_slice()) {
        ("", [only]) => Ok(only.to_string()),
        ("", _) => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
        (w, _) if names.contains(&w) => Ok(w.to_string()),
        (w, _) => Err(ApiError::bad_request(format!(
            "container {w} is not valid for pod {name}"
        ))),
    }
}

fn tail(text: &[u8], lines: Option<usize>) -> &[u8] {
    let Some(n) = lines else { return text };
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, c)| **c == b'\n')
        .nth(n.saturating_sub(1))
        .map(|(i, _)| i + 1);
    if n == 0 {
        &text[text.len()..]
    } else {
        &text[start.unwrap_or(0)..]
    }
}

/// Start streaming a log; the receiver yields the text.
pub fn start(
    shared: &Arc<Shared>,
    source: Option<LogSource>,
    r: LogRequest,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let pods = find("", "v1", "pods").expect("pods are served");
    let pod = shared
        .store()
        .get(pods, r.namespace, r.pod)
        .cloned()
        .ok_or_else(|| ApiError::not_found(pods, r.pod))?;
    let container = pick_container(&pod, r.pod, r.container)?;
    let path = source.and_then(|f| f(r.namespace, r.pod, &container));
    let (tx, rx) = mpsc::channel(16);
    let (follow, tail_lines, shared) = (r.follow, r.tail_lines, shared.clone());
    let (ns, name, uid) = (
        r.namespace.to_string(),
        r.pod.to_string(),
        pod["metadata"]["uid"].clone(),
    );
    tokio::spawn(async move {
        let Some(path) = path else { return };
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            return;
        };
        let mut buf = Vec::new();
        if file.read_to_end(&mut buf).await.is_err() {
            return;
        }
        let first = tail(&buf, tail_lines);
        if !first.is_empty() && tx.send(Bytes::copy_from_slice(first)).await.is_err() {
            return;
        }
        let mut offset = buf.len() as u64;
        if !follow {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = shared.shutdown.cancelled() => return,
                _ = tx.closed() => return,
            }
            let alive = shared
                .store()
                .get(pods, &ns, &name)
                .is_some_and(|p| p["metadata"]["uid"] == uid);
            if !alive || file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
                return;
            }
            let mut more = Vec::new();
            if file.read_to_end(&mut more).await.is_err() {
                return;
            }
            offset += more.len() as u64;
            if !more.is_empty() && tx.send(Bytes::from(more)).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tail_lines() {
        assert_eq!(tail(b"a\nb\nc\n", Some(2)), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", Some(1)), b"c");
        assert_eq!(tail(b"a\n", Some(5)), b"a\n");
        assert_eq!(tail(b"a\n", None), b"a\n");
    }

    #[test]
    fn containers() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(
            pick_container(&pod, "p", "").unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(pick_container(&pod, "p", "b").unwrap(), "b");
    }
}
