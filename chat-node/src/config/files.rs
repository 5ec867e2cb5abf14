//! Where values come from besides flags and the process environment:
//!
//! - [`Config::from_args_and_files`]: every `PARLEY_X` may instead be given as the path of a
//!   file holding it, in `PARLEY_X_FILE` (how Kubernetes mounts Secrets). What `main` uses.
//! - [`Config::from_vars`]: the variables of a map alone, the process environment unread
//!   (what the operator renders, parsed in a test).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use super::{Config, ConfigError, StartError};

/// Each key chat-node reads with its flag (`PARLEY_LISTEN` → `listen`).
fn flags(command: &clap::Command) -> impl Iterator<Item = (String, &str)> {
    command
        .get_arguments()
        .filter_map(|a| Some((a.get_env()?.to_string_lossy().into_owned(), a.get_long()?)))
}

/// `argv` with `flags` inserted right after the program name, so flags given explicitly in
/// `argv` still win.
fn with_flags(
    argv: impl IntoIterator<Item = impl Into<OsString>>,
    flags: Vec<String>,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let at = argv.len().min(1);
    argv.splice(at..at, flags.into_iter().map(Into::into));
    argv
}

impl Config {
    /// Like [`Config::from_args`], and every `PARLEY_X` may instead be given as the path of
    /// a file holding it, in `PARLEY_X_FILE` (a trailing newline is dropped). `env` reads a
    /// variable. Errors: both `PARLEY_X` and `PARLEY_X_FILE` set, an unreadable file
    /// ([`StartError::Config`], naming `PARLEY_X`), or clap's answer.
    pub fn from_args_and_files<I, T>(
        args: I,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, StartError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = <Self as clap::CommandFactory>::command();
        let mut from_files = Vec::new();
        let mut files = BTreeMap::new();
        for (key, long) in flags(&command) {
            let Some(path) = env(&parley_crd::env::file(&key)) else {
                continue;
            };
            if env(&key).is_some() {
                let problem = format!("set {key} or {key}_FILE, not both");
                return Err(StartError::Config(ConfigError { key, problem }));
            }
            let value = match std::fs::read_to_string(&path) {
                Ok(v) => v,
                Err(e) => {
                    let problem = format!("cannot read {key}_FILE={path}: {e}");
                    return Err(StartError::Config(ConfigError { key, problem }));
                }
            };
            from_files.push(format!("--{long}={}", value.trim_end_matches(['\n', '\r'])));
            files.insert(key, PathBuf::from(path));
        }
        let mut config =
            Self::from_args(with_flags(args, from_files)).map_err(StartError::Arguments)?;
        config.files = files;
        Ok(config)
    }

    /// Parses `args` and the variables of `vars` alone: the process environment is not
    /// read, so the result is what `vars` make of a node anywhere. `PARLEY_X_FILE` is not
    /// followed here: give `PARLEY_X` its value. Errors: a key of `vars` chat-node does not
    /// read ([`StartError::Config`]), or clap's answer to a value it cannot parse.
    pub fn from_vars<I, T>(args: I, vars: &BTreeMap<String, String>) -> Result<Self, StartError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = <Self as clap::CommandFactory>::command();
        let known: BTreeMap<String, &str> = flags(&command).collect();
        let mut given = Vec::new();
        for (key, value) in vars {
            let Some(long) = known.get(key) else {
                return Err(StartError::Config(ConfigError {
                    key: key.clone(),
                    problem: "is no key chat-node reads".into(),
                }));
            };
            given.push(format!("--{long}={value}"));
        }
        let matches = command
            .clone()
            .mut_args(|a| a.env(None::<&'static str>))
            .try_get_matches_from(with_flags(args, given))
            .map_err(StartError::Arguments)?;
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).map_err(StartError::Arguments)
    }
}
