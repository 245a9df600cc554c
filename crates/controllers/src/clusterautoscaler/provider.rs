//! Where new nodes come from. A provider adds nodes to a group and takes
//! them away; the nodes must register with the group's label
//! (`autoscaling.r8s.io/node-group=<group>`). Two ship with r8s: `hollow`
//! (simulated nodes in the server process, for tests and capacity
//! planning; given by the binary, which owns the hollow crate) and
//! `command` (a user's programs that make and remove real machines, which
//! join with the node token).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::group::NodeGroup;
use super::plan::GROUP_LABEL;

/// How long a provider's program may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// A source of nodes.
pub trait Provider: Send + Sync {
    /// Adds `count` nodes to `group`; returns their names.
    fn add<'a>(
        &'a self,
        group: &'a NodeGroup,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
    /// Removes node `node` of `group` (after it was drained).
    fn remove<'a>(
        &'a self,
        group: &'a NodeGroup,
        node: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// A provider handle the controller options can carry.
#[derive(Clone)]
pub struct Handle(pub Arc<dyn Provider>);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Provider")
    }
}

/// What the command provider's programs learn about the node to make.
#[derive(Debug, Clone, Default)]
pub struct JoinInfo {
    /// The API server's URL (`R8S_SERVER`).
    pub server: String,
    /// The node join token (`R8S_TOKEN`).
    pub token: String,
}

/// Runs a group's `scaleUp`/`scaleDown` programs, one run per node, with
/// `R8S_NODE_GROUP`, `R8S_NODE_NAME`, `R8S_NODE_LABELS` (for
/// `r8s agent --node-label`), `R8S_SERVER` and `R8S_TOKEN` set.
pub struct CommandProvider {
    join: JoinInfo,
}

impl CommandProvider {
    /// A provider whose machines join `join`'s server.
    pub fn new(join: JoinInfo) -> Self {
        CommandProvider { join }
    }

    async fn run(&self, argv: &[String], group: &NodeGroup, node: &str) -> Result<(), String> {
        let (prog, args) = argv.split_first().ok_or("an empty command")?;
        let mut labels: Vec<String> = group
            .template
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.push(format!("{GROUP_LABEL}={}", group.name));
        let child = tokio::process::Command::new(prog)
            .args(args)
            .env("R8S_NODE_GROUP", &group.name)
            .env("R8S_NODE_NAME", node)
            .env("R8S_NODE_LABELS", labels.join(","))
            .env("R8S_SERVER", &self.join.server)
            .env("R8S_TOKEN", &self.join.token)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(COMMAND_TIMEOUT, child)
            .await
            .map_err(|_| format!("{prog} did not finish in {COMMAND_TIMEOUT:?}"))?
            .map_err(|e| format!("{prog}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{prog} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

fn new_name(group: &str) -> String {
    let suffix: String = uuid_like().chars().take(5).collect();
    format!("{group}-{suffix}")
}

/// Five lowercase alphanumerics from the clock and a counter (names need
/// only be unique, not secret).
fn uuid_like() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ COUNTER
            .fetch_add(0x9e37_79b9, std::sync::atomic::Ordering::Relaxed)
            .rotate_left(17);
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n;
    (0..5)
        .map(|_| {
            let c = alphabet[(x % alphabet.len() as u64) as usize] as char;
            x /= alphabet.len() as u64;
            c
        })
        .collect()
}

impl Provider for CommandProvider {
    fn add<'a>(
        &'a self,
        group: &'a NodeGroup,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let cmd = group.command.as_ref().ok_or("the group has no command")?;
            let mut names = Vec::new();
            for _ in 0..count {
                let name = new_name(&group.name);
                self.run(&cmd.scale_up, group, &name).await?;
                names.push(name);
            }
            Ok(names)
        })
    }

    fn remove<'a>(
        &'a self,
        group: &'a NodeGroup,
        node: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let cmd = group.command.as_ref().ok_or("the group has no command")?;
            self.run(&cmd.scale_down, group, node).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clusterautoscaler::group::NodeGroup;

    #[tokio::test]
    async fn the_command_provider_runs_the_programs_with_the_node_facts() {
        let dir = tempfile_dir();
        let log = dir.join("log");
        let script = dir.join("make.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$1 $R8S_NODE_GROUP $R8S_NODE_NAME $R8S_NODE_LABELS $R8S_TOKEN\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
        let g = NodeGroup::from_object(&serde_json::json!({"metadata": {"name": "w"}, "spec": {
            "maxSize": 2, "provider": "command",
            "template": {"labels": {"pool": "w"}},
            "command": {"scaleUp": ["sh", script.to_str().unwrap(), "up"],
                        "scaleDown": ["sh", script.to_str().unwrap(), "down"]}}}))
        .unwrap();
        let p = CommandProvider::new(JoinInfo {
            server: "https://10.0.0.1:6443".into(),
            token: "K10::secret".into(),
        });
        let names = p.add(&g, 2).await.unwrap();
        assert_eq!(names.len(), 2);
        assert_ne!(names[0], names[1]);
        p.remove(&g, &names[0]).await.unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            format!(
                "up w {} pool=w,autoscaling.r8s.io/node-group=w K10::secret",
                names[0]
            )
        );
        assert!(lines[2].starts_with(&format!("down w {}", names[0])));
        let failing = NodeGroup {
            command: Some(crate::clusterautoscaler::group::Command {
                scale_up: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo no capacity >&2; exit 3".into(),
                ],
                scale_down: vec!["true".into()],
            }),
            ..g
        };
        let e = p.add(&failing, 1).await.unwrap_err();
        assert!(e.contains("no capacity"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("r8s-ca-{}-{}", std::process::id(), uuid_like()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
