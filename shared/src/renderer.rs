//! Renderer profiles: how a job becomes an argv vector. Operators define them in TOML (agent
//! `--renderers FILE`); `overviewer` and `noop` are built in.
//!
//! ```toml
//! [renderers.overviewer]
//! command  = ["overviewer.py", "--processes", "{threads}", "{world_dir}", "{output_dir}"]
//! progress = "overviewer"          # built-in parser, or a regex with a named group `percent`
//! timeout  = "6h"
//! [renderers.overviewer.params]
//! threads = { pattern = "^[0-9]{1,2}$", default = "1" }
//! ```
//! No shell ever sees job data: each argv element is expanded on its own and exec'd directly.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::{validate_name, JobSpec};

/// Default per-attempt timeout when neither job nor profile sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Placeholders every profile may use besides its declared params.
pub const BUILTIN_PLACEHOLDERS: [&str; 4] = ["world_dir", "output_dir", "job_id", "attempt"];

/// A declared parameter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// Regex the whole value must match.
    pub pattern: String,
    /// Used when the job does not set the param; a param without default is required.
    #[serde(default)]
    pub default: Option<String>,
}

/// How a profile runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Runner {
    /// Exec this argv template.
    Command(Vec<String>),
    /// Complete in-process at once (queue benchmarks, smoke tests).
    Noop,
    /// The built-in top-down map renderer (`renderfleet-map`): a world becomes one shard job per
    /// region, then a final step builds the zoom pyramid and the viewer.
    Map,
}

/// How progress is read from the renderer's output lines.
#[derive(Clone, Debug, PartialEq)]
pub enum ProgressSpec {
    None,
    /// Overviewer's own `Rendered N of M.  P% complete` lines, phase-aware.
    Overviewer,
    /// BlueMap CLI's `[HH:MM:SS INFO] updating map 'x': 12.345% (ETA: ...)` lines.
    BlueMap,
    /// A regex with a named group `percent`.
    Regex(String),
}

/// One renderer profile, validated.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub runner: Runner,
    pub progress: ProgressSpec,
    pub timeout: Duration,
    pub params: BTreeMap<String, ParamSpec>,
    patterns: BTreeMap<String, Regex>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    builtin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, ParamSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    renderers: BTreeMap<String, RawProfile>,
}

/// Values a job's argv is expanded with.
pub struct Expansion<'a> {
    pub world_dir: &'a Path,
    pub output_dir: &'a Path,
    pub job_id: &'a str,
    pub attempt: u32,
}

impl Profile {
    fn from_raw(name: &str, raw: RawProfile) -> Result<Self> {
        let err = |m: String| Error::Profiles(format!("renderer '{name}': {m}"));
        validate_name("renderer", name).map_err(|e| err(e.to_string()))?;
        let runner = match (raw.command, raw.builtin.as_deref()) {
            (Some(cmd), None) => {
                if cmd.is_empty() || cmd[0].is_empty() {
                    return Err(err("command must name a program".into()));
                }
                Runner::Command(cmd)
            }
            (None, Some("noop")) => Runner::Noop,
            (None, Some("map")) => Runner::Map,
            (None, Some(other)) => {
                return Err(err(format!("unknown builtin '{other}' (known: noop, map)")))
            }
            (Some(_), Some(_)) => {
                return Err(err("set either command or builtin, not both".into()))
            }
            (None, None) => return Err(err("needs a command".into())),
        };
        let progress = match raw.progress.as_deref() {
            None | Some("") | Some("none") => ProgressSpec::None,
            Some("overviewer") => ProgressSpec::Overviewer,
            Some("bluemap") => ProgressSpec::BlueMap,
            Some(re) => {
                let compiled = Regex::new(re).map_err(|e| err(format!("progress regex: {e}")))?;
                if !compiled.capture_names().any(|n| n == Some("percent")) {
                    return Err(err(
                        "progress regex needs a named group (?P<percent>...)".into()
                    ));
                }
                ProgressSpec::Regex(re.to_owned())
            }
        };
        let timeout = match raw.timeout.as_deref() {
            None => DEFAULT_TIMEOUT,
            Some(t) => {
                humantime::parse_duration(t).map_err(|e| err(format!("timeout '{t}': {e}")))?
            }
        };
        let mut patterns = BTreeMap::new();
        for (pname, spec) in &raw.params {
            validate_name("param", pname).map_err(|e| err(e.to_string()))?;
            if BUILTIN_PLACEHOLDERS.contains(&pname.as_str()) {
                return Err(err(format!(
                    "param '{pname}' shadows a built-in placeholder"
                )));
            }
            let re = Regex::new(&format!("^(?:{})$", spec.pattern))
                .map_err(|e| err(format!("param '{pname}' pattern: {e}")))?;
            if let Some(d) = &spec.default {
                if !re.is_match(d) {
                    return Err(err(format!(
                        "param '{pname}' default '{d}' fails its own pattern"
                    )));
                }
            }
            patterns.insert(pname.clone(), re);
        }
        let profile = Profile {
            name: name.to_owned(),
            runner,
            progress,
            timeout,
            params: raw.params,
            patterns,
        };
        if let Runner::Command(cmd) = &profile.runner {
            for arg in cmd {
                for ph in placeholders(arg).map_err(err)? {
                    if !BUILTIN_PLACEHOLDERS.contains(&ph) && !profile.params.contains_key(ph) {
                        return Err(err(format!(
                            "command uses {{{ph}}}, which is neither built in nor a declared param"
                        )));
                    }
                }
            }
        }
        Ok(profile)
    }

    /// Serialized form published to Redis for submit-time validation.
    pub fn to_json(&self) -> String {
        let raw = RawProfile {
            command: match &self.runner {
                Runner::Command(c) => Some(c.clone()),
                Runner::Noop | Runner::Map => None,
            },
            builtin: match self.runner {
                Runner::Command(_) => None,
                Runner::Noop => Some("noop".to_owned()),
                Runner::Map => Some("map".to_owned()),
            },
            progress: match &self.progress {
                ProgressSpec::None => None,
                ProgressSpec::Overviewer => Some("overviewer".into()),
                ProgressSpec::BlueMap => Some("bluemap".into()),
                ProgressSpec::Regex(r) => Some(r.clone()),
            },
            timeout: Some(crate::time::human(self.timeout)),
            params: self.params.clone(),
        };
        serde_json::to_string(&raw).unwrap_or_default()
    }

    /// Parse a profile published by [`Profile::to_json`].
    pub fn from_json(name: &str, json: &str) -> Result<Self> {
        let raw: RawProfile = serde_json::from_str(json)
            .map_err(|e| Error::Profiles(format!("renderer '{name}' in Redis: {e}")))?;
        Self::from_raw(name, raw)
    }

    /// Check a job's params against this profile and return the full set with defaults filled in.
    pub fn resolve_params(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (k, v) in given {
            let re = self.patterns.get(k).ok_or_else(|| {
                let declared: Vec<&str> = self.params.keys().map(String::as_str).collect();
                Error::InvalidJob(format!(
                    "renderer '{}' does not declare param '{k}' (declared: {})",
                    self.name,
                    if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    }
                ))
            })?;
            if !re.is_match(v) {
                return Err(Error::InvalidJob(format!(
                    "param '{k}' = '{}' does not match {}",
                    v.escape_debug(),
                    self.params[k].pattern
                )));
            }
            out.insert(k.clone(), v.clone());
        }
        for (k, spec) in &self.params {
            if !out.contains_key(k) {
                match &spec.default {
                    Some(d) => {
                        out.insert(k.clone(), d.clone());
                    }
                    None => {
                        return Err(Error::InvalidJob(format!(
                            "renderer '{}' needs param '{k}' (pattern {})",
                            self.name, spec.pattern
                        )))
                    }
                }
            }
        }
        Ok(out)
    }

    /// The argv of one attempt. `params` must come from [`Profile::resolve_params`].
    pub fn argv(
        &self,
        params: &BTreeMap<String, String>,
        x: &Expansion<'_>,
    ) -> Result<Vec<String>> {
        let Runner::Command(cmd) = &self.runner else {
            return Ok(Vec::new());
        };
        let attempt = x.attempt.to_string();
        cmd.iter()
            .map(|arg| {
                expand(arg, |ph| match ph {
                    "world_dir" => Some(x.world_dir.to_string_lossy().into_owned()),
                    "output_dir" => Some(x.output_dir.to_string_lossy().into_owned()),
                    "job_id" => Some(x.job_id.to_owned()),
                    "attempt" => Some(attempt.clone()),
                    p => params.get(p).cloned(),
                })
                .map_err(|m| Error::Profiles(format!("renderer '{}': {m}", self.name)))
            })
            .collect()
    }
}

/// Names inside `{...}` in an argv template; `{{` and `}}` are literal braces.
fn placeholders(arg: &str) -> std::result::Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(i) = rest.find(['{', '}']) {
        let (c, after) = (rest.as_bytes()[i], &rest[i + 1..]);
        if after.starts_with(c as char) {
            rest = &after[1..];
            continue;
        }
        if c == b'}' {
            return Err(format!("unmatched '}}' in '{arg}'"));
        }
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in '{arg}'"))?;
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    Ok(out)
}

fn expand(
    arg: &str,
    value: impl Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let (c, after) = (rest.as_bytes()[i], &rest[i + 1..]);
        if after.starts_with(c as char) {
            out.push(c as char);
            rest = &after[1..];
            continue;
        }
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in '{arg}'"))?;
        let name = &after[..end];
        out.push_str(&value(name).ok_or_else(|| format!("no value for {{{name}}}"))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The set of profiles an agent runs, or a submitter validates against.
#[derive(Clone, Debug)]
pub struct Profiles {
    map: BTreeMap<String, Profile>,
}

const BUILTIN_TOML: &str = r#"
[renderers.overviewer]
command  = ["overviewer.py", "--processes", "{threads}", "--rendermodes", "{rendermodes}", "{world_dir}", "{output_dir}"]
progress = "overviewer"
timeout  = "6h"
[renderers.overviewer.params]
rendermodes = { pattern = "^[a-z_,-]{1,64}$", default = "normal" }
threads     = { pattern = "^[0-9]{1,2}$",    default = "1" }

[renderers.noop]
builtin = "noop"
timeout = "1m"

[renderers.builtin]
builtin = "map"
timeout = "1h"
[renderers.builtin.params]
region = { pattern = "(-?[0-9]{1,6},-?[0-9]{1,6})?", default = "" }
force  = { pattern = "true|false", default = "false" }
"#;

impl Profiles {
    /// Just the built-in profiles (`overviewer`, `noop`, `builtin`).
    pub fn builtin() -> Self {
        // The built-in text is a constant checked by a unit test; failing here is a build defect.
        Self::parse(BUILTIN_TOML).unwrap_or_else(|_| Self {
            map: BTreeMap::new(),
        })
    }

    /// Parse profiles from TOML text (only what the text defines).
    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawFile = toml::from_str(text).map_err(|e| Error::Profiles(e.to_string()))?;
        let mut map = BTreeMap::new();
        for (name, p) in raw.renderers {
            map.insert(name.clone(), Profile::from_raw(&name, p)?);
        }
        Ok(Self { map })
    }

    /// The built-ins overlaid with the profiles of a TOML file (a file's profile replaces a built-in
    /// of the same name).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut all = Self::builtin();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Profiles(format!("cannot read {}: {e}", path.display())))?;
            let file = Self::parse(&text)
                .map_err(|e| Error::Profiles(format!("{}: {e}", path.display())))?;
            all.map.extend(file.map);
        }
        Ok(all)
    }

    /// Add (or replace) one profile.
    pub fn insert(&mut self, p: Profile) {
        self.map.insert(p.name.clone(), p);
    }

    pub fn get(&self, name: &str) -> Result<&Profile> {
        self.map.get(name).ok_or_else(|| Error::UnknownRenderer {
            name: name.to_owned(),
            known: self.map.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.map.values()
    }

    /// Full validation of a spec against these profiles: shape, renderer, params.
    pub fn validate(&self, spec: &JobSpec) -> Result<()> {
        spec.validate_shape()?;
        self.get(&spec.renderer)?
            .resolve_params(&spec.params)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_profiles_load_with_the_bluemap_parser() {
        let p = Profiles::parse(include_str!("../../examples/renderers.toml")).unwrap();
        assert_eq!(p.get("bluemap").unwrap().progress, ProgressSpec::BlueMap);
        let b = Profiles::builtin();
        assert!(matches!(b.get("builtin").unwrap().runner, Runner::Map));
        // Published and read back (what submitters validate against) it is the same profile.
        let json = b.get("builtin").unwrap().to_json();
        assert!(matches!(
            Profile::from_json("builtin", &json).unwrap().runner,
            Runner::Map
        ));
    }

    #[test]
    fn builtins_parse() {
        let p = Profiles::parse(BUILTIN_TOML).expect("built-in profiles parse");
        assert!(p.get("overviewer").is_ok());
        assert!(matches!(p.get("noop").map(|p| &p.runner), Ok(Runner::Noop)));
    }

    #[test]
    fn overviewer_argv_with_defaults_and_params() {
        let p = Profiles::builtin();
        let ov = p.get("overviewer").expect("built in");
        let params = ov
            .resolve_params(&[("threads".to_string(), "4".to_string())].into())
            .expect("valid");
        let argv = ov
            .argv(
                &params,
                &Expansion {
                    world_dir: Path::new("/worlds/w"),
                    output_dir: Path::new("/out/w/overviewer"),
                    job_id: "j1",
                    attempt: 2,
                },
            )
            .expect("expands");
        assert_eq!(
            argv,
            [
                "overviewer.py",
                "--processes",
                "4",
                "--rendermodes",
                "normal",
                "/worlds/w",
                "/out/w/overviewer"
            ]
        );
    }

    #[test]
    fn params_are_checked() {
        let p = Profiles::builtin();
        let ov = p.get("overviewer").expect("built in");
        let err = ov
            .resolve_params(&[("evil".to_string(), "1".to_string())].into())
            .expect_err("undeclared");
        assert!(
            err.to_string().contains("does not declare param 'evil'"),
            "{err}"
        );
        let err = ov
            .resolve_params(&[("threads".to_string(), "4; rm -rf /".to_string())].into())
            .expect_err("pattern");
        assert!(err.to_string().contains("does not match"), "{err}");
        assert!(matches!(p.get("nope"), Err(Error::UnknownRenderer { .. })));
    }

    #[test]
    fn placeholders_embedded_and_escaped() {
        let toml = r#"
            [renderers.x]
            command = ["r", "--out={output_dir}/{job_id}", "{{literal}}"]
        "#;
        let p = Profiles::parse(toml).expect("valid");
        let x = p.get("x").expect("defined");
        let argv = x
            .argv(
                &BTreeMap::new(),
                &Expansion {
                    world_dir: Path::new("/w"),
                    output_dir: Path::new("/o"),
                    job_id: "J",
                    attempt: 1,
                },
            )
            .expect("expands");
        assert_eq!(argv, ["r", "--out=/o/J", "{literal}"]);
    }

    #[test]
    fn bad_profiles_are_refused() {
        let cases = [
            (
                r#"[renderers.x]
command = ["r", "{undeclared}"]"#,
                "neither built in",
            ),
            (
                r#"[renderers.x]
command = []"#,
                "name a program",
            ),
            (
                r#"[renderers.x]
command = ["r"]
progress = "no group here""#,
                "percent",
            ),
            (
                r#"[renderers.x]
command = ["r"]
[renderers.x.params]
n = { pattern = "^[0-9]$", default = "ten" }"#,
                "fails its own pattern",
            ),
            (
                r#"[renderers.x]
command = ["r"]
surprise = 1"#,
                "unknown field",
            ),
            (
                r#"[renderers.x]
command = ["r", "{open"]"#,
                "unclosed",
            ),
        ];
        for (text, needle) in cases {
            let err = Profiles::parse(text).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn profile_json_round_trip() {
        let p = Profiles::builtin();
        let ov = p.get("overviewer").expect("built in");
        let back = Profile::from_json("overviewer", &ov.to_json()).expect("round trip");
        assert_eq!(back.runner, ov.runner);
        assert_eq!(back.params, ov.params);
        assert_eq!(back.progress, ov.progress);
    }
}
