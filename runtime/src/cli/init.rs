//! `weir init`: a new handler project in Rust, Go, Python or JavaScript that builds with one
//! command and passes its own unit test. A project carries a copy of its language's SDK
//! (`weir-sdk/<language>`) and of the WIT world (`wit/`), both as this `weir` has them, so it
//! builds without weir's repository and against the world its nodes speak.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::control::validate_name;
use crate::say;

/// `weir init` options.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The handler's language
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// The new project's directory: created, or empty
    pub dir: PathBuf,
    /// The project's (and the suggested handler's) name [default: the directory's name]
    #[arg(long)]
    pub name: Option<String>,
}

/// A language `weir init` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, built with cargo for wasm32-wasip2
    Rust,
    /// Go, built with mainline Go for wasip1
    Go,
    /// Python, built with componentize-py
    #[value(alias = "py")]
    Python,
    /// JavaScript (with TypeScript declarations), built with componentize-js
    #[value(alias = "javascript", alias = "ts", alias = "typescript")]
    Js,
}

/// One file of a project: where it goes, and what it holds.
#[derive(Debug)]
struct File {
    path: &'static str,
    contents: &'static str,
}

/// Files of the repository, each under `$dir` there and at the same path in a project.
macro_rules! files {
    ($dir:literal: $($path:literal),* $(,)?) => {
        &[$(File {
            path: $path,
            contents: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../", $dir, "/", $path)),
        }),*]
    };
}

/// What `weir init` writes for one language, and how the project is tested and built.
#[derive(Debug)]
pub struct Template {
    /// The project's own files (`templates/<language>`), where `{{name}}` is the project's name.
    files: &'static [File],
    /// The SDK's files (`guest-sdk/<language>`), copied to `weir-sdk/<language>` unchanged.
    sdk: &'static [File],
    /// Where the SDK goes in the project.
    sdk_dir: &'static str,
    /// The command that runs the project's unit test, from its directory.
    pub test: &'static str,
    /// The command that builds the component, from its directory; `{{name}}` as above.
    build: &'static str,
    /// The component the build writes.
    component: &'static str,
}

const WIT: &[File] = files!("wit": "handler.wit");

const RUST: Template = Template {
    files: files!("templates/rust": "Cargo.toml", "src/lib.rs", "weir-sdk/rust/Cargo.toml", "README.md", ".gitignore"),
    sdk: files!("guest-sdk/rust": "src/lib.rs", "src/state.rs"),
    sdk_dir: "weir-sdk/rust",
    test: "cargo test",
    build: "cargo build --release --target wasm32-wasip2",
    component: "target/wasm32-wasip2/release/{{crate}}.wasm",
};

const GO: Template = Template {
    files: files!("templates/go": "go.mod", "main.go", "main_test.go", "README.md", ".gitignore"),
    sdk: files!("guest-sdk/go":
        "go.mod", "abi.go", "adapter_wasip1.go", "arena.go", "doc.go", "exports_wasip1.go",
        "handler.go", "host.go", "host_native.go", "host_wasip1.go", "message.go", "outcome.go",
        "realloc_go.go", "realloc_tinygo.go", "state.go", "state_native.go", "state_wasip1.go",
    ),
    sdk_dir: "weir-sdk/go",
    test: "go test ./...",
    build: "GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o {{name}}.wasm .",
    component: "{{name}}.wasm",
};

const PYTHON: Template = Template {
    files: files!("templates/python": "app.py", "test_app.py", "README.md", ".gitignore"),
    sdk: files!("guest-sdk/python": "weir/__init__.py", "weir/_host.py", "weir/state.py", "weir/testing.py"),
    sdk_dir: "weir-sdk/python",
    test: "PYTHONPATH=weir-sdk/python python3 -m unittest",
    build: "componentize-py -d wit -w handler componentize -p . -p weir-sdk/python app -o {{name}}.wasm",
    component: "{{name}}.wasm",
};

const JS: Template = Template {
    files: files!("templates/js": "app.js", "app.test.js", "package.json", "README.md", ".gitignore"),
    sdk: files!("guest-sdk/js":
        "package.json", "index.js", "index.d.ts", "internal.js", "state.js", "state.d.ts",
        "build.mjs", "testing/index.js", "testing/index.d.ts",
        "testing/register.js", "testing/hooks.js", "testing/host.js", "testing/state.js",
        "testing/store.js",
    ),
    sdk_dir: "weir-sdk/js",
    test: "npm test",
    build: "npm run build",
    component: "{{name}}.wasm",
};

impl Lang {
    /// The language's template.
    pub fn template(self) -> &'static Template {
        match self {
            Lang::Rust => &RUST,
            Lang::Go => &GO,
            Lang::Python => &PYTHON,
            Lang::Js => &JS,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Go => "Go",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }
}

impl Template {
    /// The command that builds the project named `name`.
    pub fn build(&self, name: &str) -> String {
        fill(self.build, name)
    }

    /// The component the build of the project named `name` writes, relative to the project.
    pub fn component(&self, name: &str) -> String {
        fill(self.component, name)
    }

    /// Every file of the project named `name`: path in the project, contents.
    fn project<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (String, String)> + 'a {
        let own = (self.files.iter()).map(move |f| (f.path.to_owned(), fill(f.contents, name)));
        let sdk = (self.sdk.iter()).map(|f| {
            (
                format!("{}/{}", self.sdk_dir, f.path),
                f.contents.to_owned(),
            )
        });
        let wit = WIT
            .iter()
            .map(|f| (format!("wit/{}", f.path), f.contents.to_owned()));
        own.chain(sdk).chain(wit)
    }
}

/// `template` with the project's name (and its Rust crate name, and weir's version) filled in.
fn fill(template: &str, name: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{weir_version}}", env!("CARGO_PKG_VERSION"))
}

/// Writes the project, and says what was written and what to run next.
pub fn run(args: InitArgs) -> anyhow::Result<()> {
    // `weir init .` names the project after the directory it is run in.
    let dir = std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone());
    let named = if dir.ends_with(".") {
        dir.parent()
    } else {
        Some(dir.as_path())
    };
    let name = match &args.name {
        Some(name) => name.clone(),
        None => (named.and_then(Path::file_name))
            .and_then(|name| name.to_str())
            .with_context(|| {
                format!(
                    "{} has no name to give the project: name it with --name",
                    args.dir.display()
                )
            })?
            .to_owned(),
    };
    validate_project_name(&name)
        .context("a project is named like the handler it deploys as (or give --name)")?;
    refuse_unless_new(&args.dir)?;
    let template = args.lang.template();
    for (path, contents) in template.project(&name) {
        let path = args.dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // Never over a file that appeared since the directory was found empty.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(contents.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let dir = args.dir.display();
    say!("created a {} handler, {name}, in {dir}", args.lang.title())?;
    say!("  its README.md says how it works; next:")?;
    say!("  cd {dir}")?;
    if args.lang == Lang::Js {
        say!("  npm install                  # componentize-js, into node_modules")?;
    }
    say!("  {}", template.test)?;
    say!("  {}", template.build(&name))?;
    say!(
        "  weir deploy {} --tenant <tenant> --name {name} --stream <stream> --output 'out.>'",
        template.component(&name)
    )?;
    Ok(())
}

/// A handler's name (see [`validate_name`]) that every language's build takes: starting with a
/// letter (a Rust crate name may not start with a digit), and not the SDK's own crate name.
fn validate_project_name(name: &str) -> anyhow::Result<()> {
    validate_name("project", name)?;
    anyhow::ensure!(
        name.starts_with(|c: char| c.is_ascii_lowercase()),
        "project name {name:?} must start with a letter"
    );
    anyhow::ensure!(
        name != "weir-guest",
        "weir-guest is the Rust SDK's name: a project needs another"
    );
    Ok(())
}

/// Refuses a directory that exists and holds anything: `weir init` never overwrites a file.
fn refuse_unless_new(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => anyhow::bail!(
            "{} is not empty: weir init writes a new project, into a new or empty directory",
            dir.display()
        ),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test here.
mod tests {
    use super::*;

    /// The SDK files a project gets are every file of the SDK but its own tests and their
    /// configuration.
    #[test]
    fn every_sdk_file_is_copied_into_a_project() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (lang, dir) in [
            (Lang::Rust, "guest-sdk/rust/src"),
            (Lang::Go, "guest-sdk/go"),
            (Lang::Python, "guest-sdk/python/weir"),
            (Lang::Js, "guest-sdk/js"),
        ] {
            let sdk_root = root.join(dir);
            let mut on_disk = Vec::new();
            let mut pending = vec![sdk_root.clone()];
            while let Some(dir) = pending.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    let file = path.file_name().unwrap().to_string_lossy().into_owned();
                    if path.is_dir() {
                        if !matches!(
                            file.as_str(),
                            "test" | "tests" | "__pycache__" | "node_modules"
                        ) {
                            pending.push(path);
                        }
                    } else if !file.ends_with("_test.go")
                        && !file.ends_with(".pyc")
                        && file != "tsconfig.json"
                    {
                        on_disk.push(
                            path.strip_prefix(&sdk_root)
                                .unwrap()
                                .to_string_lossy()
                                .into_owned(),
                        );
                    }
                }
            }
            let prefix = match lang {
                Lang::Rust => "src/",
                Lang::Python => "weir/",
                _ => "",
            };
            let mut copied: Vec<String> = (lang.template().sdk.iter())
                .filter_map(|f| f.path.strip_prefix(prefix).map(str::to_owned))
                .collect();
            copied.sort();
            on_disk.sort();
            assert_eq!(copied, on_disk, "{lang:?}");
        }
    }

    #[test]
    fn a_project_is_written_into_a_new_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("shout");
        let args = |dir: &Path| InitArgs {
            lang: Lang::Go,
            dir: dir.to_owned(),
            name: None,
        };
        run(args(&project)).unwrap();
        let main = std::fs::read_to_string(project.join("main.go")).unwrap();
        assert!(
            main.starts_with("// shout: a weir stream handler."),
            "{main}"
        );
        assert!(project.join("weir-sdk/go/handler.go").exists());
        assert!(project.join("wit/handler.wit").exists());

        let again = run(args(&project)).unwrap_err().to_string();
        assert!(again.contains("is not empty"), "{again}");
        let unnamed = run(InitArgs {
            name: Some("Shout!".into()),
            ..args(&dir.path().join("other"))
        });
        assert!(format!("{:#}", unnamed.unwrap_err()).contains("--name"));
        let digit = run(InitArgs {
            name: Some("2024-orders".into()),
            ..args(&dir.path().join("digit"))
        });
        assert!(format!("{:#}", digit.unwrap_err()).contains("must start with a letter"));
    }
}
