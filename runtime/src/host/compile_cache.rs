//! Where a process keeps the machine code it compiled from components, so that a version is
//! compiled once per machine rather than once per process: a node that restarts, a second
//! deployment of the same component and a second `weir deploy` of it load what was compiled
//! before. It is wasmtime's own cache (zstd-compressed artifacts keyed by a hash of the
//! component's bytes and every engine setting that shapes the code, written atomically, trimmed
//! by a background worker).
//!
//! Only machine code this process, or another run by the same user on the same machine,
//! compiled from Wasm bytes is ever loaded: nothing a tenant supplies is machine code, and
//! nothing is read from NATS but Wasm.

use std::path::{Path, PathBuf};

/// Names the directory, or `off`, for every command that compiles components.
pub const ENV: &str = "WEIR_COMPILE_CACHE";

/// Where compiled code is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileCache {
    /// `$WEIR_COMPILE_CACHE` (a directory, or `off`), else `$XDG_CACHE_HOME/weir`, else
    /// `$HOME/.cache/weir`; nowhere without any of them.
    Default,
    /// In this directory (made if missing).
    At(PathBuf),
    /// Nowhere: every compile starts from the Wasm.
    Off,
}

impl CompileCache {
    /// Reads a `--compile-cache` value: a directory, or `off`.
    pub fn parse(value: &str) -> Self {
        match value {
            "off" => Self::Off,
            dir => Self::At(PathBuf::from(dir)),
        }
    }

    /// The directory it names, if any, made absolute.
    pub fn directory(&self) -> Option<PathBuf> {
        let dir = match self {
            Self::Off => return None,
            Self::At(dir) => dir.clone(),
            Self::Default => match std::env::var_os(ENV) {
                Some(value) => return Self::parse(&value.to_string_lossy()).directory(),
                None => default_directory()?,
            },
        };
        std::path::absolute(&dir).ok()
    }

    /// The wasmtime cache in its directory, or `None` (and a warning) if it has none or the
    /// directory cannot be made: compiling without a cache is slower, never wrong.
    pub(crate) fn open(&self) -> Option<wasmtime::Cache> {
        let dir = self.directory()?;
        match open_at(&dir) {
            Ok(cache) => Some(cache),
            Err(error) => {
                tracing::warn!(
                    "not keeping compiled components in {}: {error:#}",
                    dir.display()
                );
                None
            }
        }
    }
}

fn default_directory() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(cache) => PathBuf::from(cache),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("weir"))
}

fn open_at(dir: &Path) -> anyhow::Result<wasmtime::Cache> {
    // Readable and writable by its owner alone: what is loaded from it runs as native code.
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(dir);
    wasmtime::Cache::new(config).map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_names_a_directory_or_turns_the_cache_off() {
        assert_eq!(CompileCache::parse("off"), CompileCache::Off);
        assert_eq!(CompileCache::Off.directory(), None);
        let at = CompileCache::parse("relative/dir").directory();
        assert!(at.is_some_and(|dir| dir.is_absolute() && dir.ends_with("relative/dir")));
    }
}
