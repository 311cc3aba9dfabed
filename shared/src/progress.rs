//! Progress parsers: turn renderer output lines into a percentage that never goes backwards.

use regex::Regex;

use crate::renderer::ProgressSpec;

/// A progress reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Overall percent, 0-100, monotonic within an attempt.
    pub percent: f64,
    /// Human phase description when the renderer has phases, e.g. "2: 300/4096".
    pub phase: Option<String>,
}

/// Stateful parser for one attempt's output.
#[derive(Debug)]
pub struct ProgressParser {
    kind: Kind,
    reported: f64,
}

#[derive(Debug)]
enum Kind {
    None,
    Overviewer(OverviewerState),
    BlueMap(BlueMapState),
    Regex(Regex),
}

/// BlueMap renders its maps one after another, each task reporting its own percentage.
#[derive(Debug, Default)]
struct BlueMapState {
    /// Maps seen so far, in order.
    maps: Vec<String>,
}

fn bluemap_line() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    // `[12:00:13 INFO] updating map 'world': 12.345% (ETA: 0:01:11)`
    RE.get_or_init(|| {
        Regex::new(r"INFO\]\s*(?P<desc>[^\[\]]+?):\s*(?P<pct>\d{1,3}(?:\.\d{1,3})?)%")
            .expect("constant regex")
    })
}

fn bluemap_map() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^updating map '(?P<map>[^']*)'$").expect("constant regex"))
}

#[derive(Debug, Default)]
struct OverviewerState {
    phase: u32,
    total: u64,
    done: u64,
    /// Tiles of the phases that already ended.
    before: u64,
}

fn overviewer_line() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    // `Rendered 300 of 4096.  7% complete` with or without the `.  ETA: ...` tail; the line may
    // carry Overviewer's timestamp and level letter, or the verbose logger's prefix, in front.
    RE.get_or_init(|| {
        Regex::new(r"Rendered (\d+) of (\d+)\.\s+(\d+)% complete").expect("constant regex")
    })
}

impl ProgressParser {
    /// A parser for a profile's progress spec. A regex that fails to compile parses nothing (the
    /// profile loader already refused such a profile).
    pub fn new(spec: &ProgressSpec) -> Self {
        let kind = match spec {
            ProgressSpec::None => Kind::None,
            ProgressSpec::Overviewer => Kind::Overviewer(OverviewerState::default()),
            ProgressSpec::BlueMap => Kind::BlueMap(BlueMapState::default()),
            ProgressSpec::Regex(r) => Regex::new(r).map(Kind::Regex).unwrap_or(Kind::None),
        };
        Self {
            kind,
            reported: 0.0,
        }
    }

    /// Feed one output line; returns a reading when the line moved progress forward.
    pub fn feed(&mut self, line: &str) -> Option<Progress> {
        let (raw, phase) = match &mut self.kind {
            Kind::None => return None,
            Kind::Regex(re) => {
                let caps = re.captures(line)?;
                let p: f64 = caps.name("percent")?.as_str().trim().parse().ok()?;
                (p, None)
            }
            Kind::BlueMap(st) => {
                if line.contains("Your maps are now all up-to-date!") {
                    (100.0, Some("up to date".to_owned()))
                } else {
                    let caps = bluemap_line().captures(line)?;
                    let desc = caps.name("desc")?.as_str().trim();
                    let pct: f64 = caps.name("pct")?.as_str().parse().ok()?;
                    match bluemap_map().captures(desc) {
                        // Overall: maps already finished plus this one's share, over the maps
                        // seen so far (one map per job, as the documented profile does, is exact).
                        Some(m) => {
                            let name = m["map"].to_owned();
                            let i = match st.maps.iter().position(|x| *x == name) {
                                Some(i) => i,
                                None => {
                                    st.maps.push(name);
                                    st.maps.len() - 1
                                }
                            };
                            let overall =
                                100.0 * (i as f64 + pct.min(100.0) / 100.0) / st.maps.len() as f64;
                            (overall, Some(format!("{desc}: {pct}%")))
                        }
                        // `preparing map 'x' update`, `updating region x,z`: shown, not counted.
                        None => (self.reported, Some(format!("{desc}: {pct}%"))),
                    }
                }
            }
            Kind::Overviewer(st) => {
                let caps = overviewer_line().captures(line)?;
                let done: u64 = caps[1].parse().ok()?;
                let total: u64 = caps[2].parse().ok()?;
                if st.phase == 0 {
                    st.phase = 1;
                } else if total != st.total || done < st.done {
                    // The dispatcher started the next phase with its own total.
                    st.before += st.total;
                    st.phase += 1;
                }
                st.total = total;
                st.done = done.min(total);
                let all = st.before + st.total;
                let pct = if all == 0 {
                    0.0
                } else {
                    100.0 * (st.before + st.done) as f64 / all as f64
                };
                (pct, Some(format!("{}: {}/{}", st.phase, st.done, st.total)))
            }
        };
        if !raw.is_finite() {
            return None;
        }
        let pct = raw.clamp(0.0, 100.0);
        let phase_changed = phase.is_some();
        if pct > self.reported || phase_changed {
            self.reported = self.reported.max(pct);
            Some(Progress {
                percent: (self.reported * 10.0).round() / 10.0,
                phase,
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(spec: &ProgressSpec, lines: &[&str]) -> Vec<Progress> {
        let mut p = ProgressParser::new(spec);
        lines.iter().filter_map(|l| p.feed(l)).collect()
    }

    #[test]
    fn overviewer_new_and_old_formats() {
        let got = feed_all(
            &ProgressSpec::Overviewer,
            &[
                "2024-12-20 11:32:10  Rendered 0 of 4096.  0% complete.  ETA: ------",
                "2024-12-20 11:32:13  Rendered 300 of 4096.  7% complete.  ETA: 00h 03m 12s",
                "2014-04-13 11:10:23  Rendered 2048 of 4096.  50% complete",
                "2024-12-20 11:32:13 W Some warning that is not progress",
            ],
        );
        let pct: Vec<f64> = got.iter().map(|p| p.percent).collect();
        assert_eq!(pct, [0.0, 7.3, 50.0]);
        assert_eq!(got[2].phase.as_deref(), Some("1: 2048/4096"));
    }

    #[test]
    fn overviewer_phases_never_go_backwards() {
        let got = feed_all(
            &ProgressSpec::Overviewer,
            &[
                "Rendered 50 of 100.  50% complete",
                "Rendered 100 of 100.  100% complete",
                "Rendered 0 of 300.  0% complete.  ETA: ------",
                "Rendered 150 of 300.  50% complete",
                "Rendered 300 of 300.  100% complete",
            ],
        );
        let pct: Vec<f64> = got.iter().map(|p| p.percent).collect();
        assert_eq!(pct, [50.0, 100.0, 100.0, 100.0, 100.0]);
        assert_eq!(got[3].phase.as_deref(), Some("2: 150/300"));
        let mut last = 0.0;
        for p in &got {
            assert!(p.percent >= last);
            last = p.percent;
        }
    }

    #[test]
    fn bluemap_recorded_sample() {
        let text = include_str!("../../tests/fixtures/bluemap-sample.log");
        let got = feed_all(&ProgressSpec::BlueMap, &text.lines().collect::<Vec<_>>());
        let pct: Vec<f64> = got.iter().map(|p| p.percent).collect();
        // preparing (0), then the map's own percentages, then done.
        assert_eq!(pct, [0.0, 12.3, 25.1, 51.0, 77.8, 100.0, 100.0]);
        assert_eq!(
            got[1].phase.as_deref(),
            Some("updating map 'world': 12.345%")
        );
        assert_eq!(
            got[0].phase.as_deref(),
            Some("preparing map 'world' update: 0%")
        );
        assert_eq!(got[6].phase.as_deref(), Some("up to date"));
    }

    #[test]
    fn bluemap_two_maps_never_go_backwards() {
        let got = feed_all(
            &ProgressSpec::BlueMap,
            &[
                "[10:00:00 INFO] updating map 'a': 50.000% (ETA: 0:00:10)",
                "[10:00:10 INFO] updating map 'a': 100.000% (ETA: 0:00:00)",
                "[10:00:20 INFO] updating map 'b': 10.000% (ETA: 0:00:50)",
                "[10:00:30 INFO] updating map 'b': 80.000% (ETA: 0:00:05)",
                "[10:00:31 WARN] Failed to load chunk: 12.5% of something is not progress",
            ],
        );
        let pct: Vec<f64> = got.iter().map(|p| p.percent).collect();
        assert_eq!(pct, [50.0, 100.0, 100.0, 100.0]);
    }

    #[test]
    fn regex_percent() {
        let spec = ProgressSpec::Regex(r"progress (?P<percent>[0-9.]+)%".into());
        let got = feed_all(
            &spec,
            &["progress 12.5%", "noise", "progress 10%", "progress 140%"],
        );
        let pct: Vec<f64> = got.iter().map(|p| p.percent).collect();
        assert_eq!(pct, [12.5, 100.0]);
        assert!(feed_all(&ProgressSpec::None, &["progress 12%"]).is_empty());
    }
}
