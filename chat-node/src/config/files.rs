//! Values read from files: every `PARLEY_X` may instead be given as the path of a file
//! holding it, in `PARLEY_X_FILE` (how Kubernetes mounts Secrets).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Config, ConfigError, StartError};

impl Config {
    /// Like [`Config::from_args`], and every `PARLEY_X` may instead be given as the path of
    /// a file holding it, in `PARLEY_X_FILE` (how Kubernetes mounts Secrets).
    pub fn from_args_and_files<I, T>(
        args: I,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, StartError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut argv: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let command = <Self as clap::CommandFactory>::command();
        let mut from_files = Vec::new();
        let mut files = BTreeMap::new();
        for arg in command.get_arguments() {
            let (Some(key), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let key = key.to_string_lossy().into_owned();
            let Some(path) = env(&format!("{key}_FILE")) else {
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
        // Right after the program name, so flags given explicitly still win.
        let at = argv.len().min(1);
        argv.splice(at..at, from_files.into_iter().map(Into::into));
        let mut config = Self::from_args(argv).map_err(StartError::Arguments)?;
        config.files = files;
        Ok(config)
    }
}
