//! What `shipsec serve` lets its clients do: the [`ServiceConfig`] section of the engine
//! configuration (`service:`) — request limits, event-stream subscribers, and the
//! [`DefinitionPolicy`] on what a definition may run.
//!
//! A definition is code: `core.process` runs commands on the host. A server refuses it
//! unless the configuration names the executables it may start (absolute paths) and the
//! environment variables a definition may set, and it can restrict the components a
//! definition may use at all. The check at submission names the node; the component
//! checks again when it runs, since a command can also arrive through an input.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::definition::WorkflowDefinition;
use crate::runtime::definition::validate::Problem;
use crate::runtime::guardrails::config::secs;
use crate::runtime::guardrails::connections::ConnectionLimits;

/// The id of the component that runs host commands.
pub const PROCESS_COMPONENT: &str = "core.process";

/// The `service:` section of the engine configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// What definitions may use.
    pub definitions: DefinitionPolicy,
    /// Largest request body, in bytes (413 past it).
    pub max_body_bytes: usize,
    /// Longest a request may take, `?wait` and event streams aside (503 past it).
    #[serde(with = "secs", rename = "requestTimeoutSeconds")]
    pub request_timeout: Duration,
    /// Longest `GET /v1/runs/{id}/result?wait=` may hold a request.
    #[serde(with = "secs", rename = "maxWaitSeconds")]
    pub max_wait: Duration,
    /// Interval of the keep-alive comments on a quiet event stream (for proxies that
    /// close idle connections).
    #[serde(with = "secs", rename = "keepAliveSeconds")]
    pub keep_alive: Duration,
    /// Event-stream subscribers of one run at once (429 past it).
    pub max_subscribers_per_run: usize,
    /// Event-stream subscribers at once, all runs (429 past it).
    pub max_subscribers: usize,
    /// Events a subscriber may fall behind before it is disconnected (it resumes with
    /// `Last-Event-ID`).
    pub subscriber_buffer: usize,
    /// Most runs one listing page gives.
    pub max_page: usize,
    /// What the API's listeners let a peer hold: connections, header and idle timeouts.
    pub connections: ConnectionLimits,
    /// Each pending input request gets a public token that answers it once without a
    /// bearer token (`POST /v1/inputs/resolve/{token}`): off unless set.
    pub public_input_links: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            definitions: DefinitionPolicy::default(),
            max_body_bytes: 8 << 20,
            request_timeout: Duration::from_secs(30),
            max_wait: Duration::from_secs(300),
            keep_alive: Duration::from_secs(15),
            max_subscribers_per_run: 64,
            max_subscribers: 4_096,
            subscriber_buffer: 4_096,
            max_page: 1_000,
            connections: ConnectionLimits::default(),
            public_input_links: false,
        }
    }
}

/// What a definition sent to the server may use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DefinitionPolicy {
    /// The only components a definition may use; every registered one when absent
    /// (`core.process` still needs `process`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<String>>,
    /// `core.process` is allowed, within these bounds; refused when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessPolicy>,
}

/// The commands `core.process` may start for a server's clients.
///
/// It checks the program and, for an entry that fixes them, the leading arguments; not
/// the arguments that follow. Allowing a general tool (`cat`, `sh`, an interpreter)
/// allows whatever it can be told to do, such as reading the server's token files; a
/// narrow policy names an interpreter with its one script (`{path, args}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProcessPolicy {
    /// Executables by absolute path, each alone or with the arguments a command must
    /// begin with; a command's first word must be one of the paths, exactly as written
    /// (what is executed is checked, not where a link points).
    pub executables: Vec<Executable>,
    /// Environment variables a definition may set or unset (`env` param).
    pub env: Vec<String>,
}

/// One allowed executable: a path, or a path and the arguments a command must begin with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Executable {
    /// Any command of this program.
    Path(PathBuf),
    /// Commands of this program that begin with these arguments (an interpreter and its
    /// script).
    #[serde(rename_all = "camelCase")]
    Fixed {
        /// The program.
        path: PathBuf,
        /// The arguments every command of it begins with.
        args: Vec<String>,
    },
}

impl Executable {
    fn path(&self) -> &Path {
        match self {
            Executable::Path(path) | Executable::Fixed { path, .. } => path,
        }
    }

    /// Whether `argv` is a command this entry allows.
    fn allows(&self, argv: &[String]) -> bool {
        let Some((program, rest)) = argv.split_first() else {
            return false;
        };
        let fixed: &[String] = match self {
            Executable::Path(_) => &[],
            Executable::Fixed { args, .. } => args,
        };
        Path::new(program) == self.path() && rest.starts_with(fixed)
    }
}

impl From<&str> for Executable {
    fn from(path: &str) -> Executable {
        Executable::Path(PathBuf::from(path))
    }
}

/// Why the process policy refuses a command or an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The command has no program.
    #[error("the command is empty")]
    Empty,
    /// The program is not an absolute path.
    #[error(
        "`{0}` is not an absolute path; this server starts only the executables its configuration names (service.definitions.process.executables)"
    )]
    Relative(String),
    /// No executable entry names the program.
    #[error(
        "`{0}` is not an executable this server may start (service.definitions.process.executables)"
    )]
    NotListed(String),
    /// Entries name the program, each with leading arguments the command lacks.
    #[error(
        "`{program}` may start here only with the arguments {} first (service.definitions.process.executables)",
        fixed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(" or ")
    )]
    Arguments {
        /// The program.
        program: String,
        /// The leading arguments of each entry naming it.
        fixed: Vec<Vec<String>>,
    },
    /// A definition may not set this environment variable.
    #[error(
        "the environment variable `{0}` may not be set by a definition here (service.definitions.process.env)"
    )]
    Env(String),
}

impl ProcessPolicy {
    /// Whether `argv` (a command) and the names of `env` are allowed.
    ///
    /// # Errors
    /// Why not.
    pub fn check<'a>(
        &self,
        argv: &[String],
        env: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Refused> {
        self.check_command(argv)?;
        self.check_env(env)
    }

    /// Whether `argv` may be started: its program an absolute path that one of the
    /// executables names exactly, with the leading arguments that entry fixes.
    ///
    /// # Errors
    /// Why not.
    pub fn check_command(&self, argv: &[String]) -> Result<(), Refused> {
        let program = argv.first().ok_or(Refused::Empty)?;
        if !Path::new(program).is_absolute() {
            return Err(Refused::Relative(program.clone()));
        }
        if self.executables.iter().any(|e| e.allows(argv)) {
            return Ok(());
        }
        let fixed: Vec<Vec<String>> = (self.executables.iter())
            .filter_map(|e| match e {
                Executable::Fixed { path, args } if path == Path::new(program) => {
                    Some(args.clone())
                }
                _ => None,
            })
            .collect();
        Err(if fixed.is_empty() {
            Refused::NotListed(program.clone())
        } else {
            Refused::Arguments {
                program: program.clone(),
                fixed,
            }
        })
    }

    /// Whether a definition may set (or unset) each of these environment variables.
    ///
    /// # Errors
    /// The first that is not allowed.
    pub fn check_env<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), Refused> {
        for name in names {
            if !self.env.iter().any(|e| e == name) {
                return Err(Refused::Env(name.to_owned()));
            }
        }
        Ok(())
    }
}

impl DefinitionPolicy {
    /// Whether a definition may use component `id` at all.
    pub fn allows(&self, id: &str) -> bool {
        let listed = self
            .components
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a == id));
        listed && (id != PROCESS_COMPONENT || self.process.is_some())
    }

    /// Every action this policy refuses, with its path: a component not allowed, a
    /// `core.process` without `process`, or a command or environment given in the
    /// definition that `process` does not allow.
    pub fn check(&self, definition: &WorkflowDefinition) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (i, action) in definition.actions.iter().enumerate() {
            let path = format!("actions[{i}]");
            let id = action.component_id.as_str();
            let refused = |message: String| Problem {
                path: format!("{path}.componentId"),
                message: format!("node `{}`: {message}", action.node_ref),
            };
            if let Some(allowed) = &self.components
                && !allowed.iter().any(|a| a == id)
            {
                problems.push(refused(format!(
                    "component `{id}` is not allowed on this server (allowed: {})",
                    allowed.join(", ")
                )));
                continue;
            }
            if id != PROCESS_COMPONENT {
                continue;
            }
            let Some(process) = &self.process else {
                problems.push(refused(format!(
                    "`{PROCESS_COMPONENT}` runs commands on the host and is not enabled on this server (service.definitions.process in the engine configuration)"
                )));
                continue;
            };
            for (field, values) in [
                ("params", &action.params),
                ("inputOverrides", &action.input_overrides),
            ] {
                // A malformed command is the component's to refuse when it runs.
                let command = values.get("command").and_then(command_words);
                let env = values.get("env").and_then(|e| e.as_object());
                let checked = command
                    .map_or(Ok(()), |argv| process.check_command(&argv))
                    .and_then(|()| {
                        process
                            .check_env(env.into_iter().flat_map(|e| e.keys().map(String::as_str)))
                    });
                if let Err(message) = checked {
                    problems.push(Problem {
                        path: format!("{path}.{field}"),
                        message: format!("node `{}`: {message}", action.node_ref),
                    });
                }
            }
        }
        problems
    }
}

/// The words of a command value, when it is a list of strings.
fn command_words(value: &serde_json::Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|w| w.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn policy(yaml: &str) -> ProcessPolicy {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn an_entry_with_arguments_allows_only_commands_that_begin_with_them() {
        let p = policy(
            "executables:\n  - /bin/echo\n  - {path: /usr/bin/python3, args: [/opt/enrich.py]}\n",
        );
        assert!(p.check_command(&argv(&["/bin/echo", "anything"])).is_ok());
        assert!(
            p.check_command(&argv(&["/usr/bin/python3", "/opt/enrich.py", "--fast"]))
                .is_ok()
        );
        let refused = p
            .check_command(&argv(&[
                "/usr/bin/python3",
                "-c",
                "print(open('/etc/shadow').read())",
            ]))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("[\"/opt/enrich.py\"]"), "{refused}");
        assert!(p.check_command(&argv(&["/usr/bin/python3"])).is_err());
    }

    #[test]
    fn the_path_executed_is_checked_as_written_not_where_it_leads() {
        let dir = std::env::temp_dir().join(format!("shipsec-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("echo-link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/bin/echo", &link).unwrap();
        let p = policy("executables: [/bin/echo]\n");
        let link = link.display().to_string();
        assert!(
            p.check_command(&argv(&[&link, "hi"])).is_err(),
            "a link to an allowed program"
        );
        assert!(
            p.check_command(&argv(&["/bin/../bin/echo"])).is_err(),
            "another spelling"
        );
        assert!(
            p.check_command(&argv(&["echo"])).is_err(),
            "a relative path"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
