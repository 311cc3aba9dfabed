//! The Lua scripts behind every job state transition. Each is `lib.lua` followed by its own file, so
//! every transition is one atomic, reviewable unit. See the header of each `.lua` file.

use std::sync::OnceLock;

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        concat!(
            include_str!("scripts/lib.lua"),
            "\n",
            include_str!(concat!("scripts/", $file))
        )
    };
}

/// All scripts, loaded once per process (EVALSHA, falling back to EVAL on NOSCRIPT).
pub struct Scripts {
    pub submit: Script,
    pub claim: Script,
    pub start: Script,
    pub progress: Script,
    pub finish: Script,
    pub fanout: Script,
    pub cancel: Script,
    pub retry: Script,
    pub settle: Script,
    pub heartbeat: Script,
    pub lease: Script,
    pub leader: Script,
}

/// The process-wide scripts.
pub fn scripts() -> &'static Scripts {
    static S: OnceLock<Scripts> = OnceLock::new();
    S.get_or_init(|| Scripts {
        submit: Script::new(script!("submit.lua")),
        claim: Script::new(script!("claim.lua")),
        start: Script::new(script!("start.lua")),
        progress: Script::new(script!("progress.lua")),
        finish: Script::new(script!("finish.lua")),
        fanout: Script::new(script!("fanout.lua")),
        cancel: Script::new(script!("cancel.lua")),
        retry: Script::new(script!("retry.lua")),
        settle: Script::new(script!("settle.lua")),
        heartbeat: Script::new(script!("heartbeat.lua")),
        lease: Script::new(script!("lease.lua")),
        leader: Script::new(script!("leader.lua")),
    })
}
