//! CPU time, write syscalls and resident memory of a process, from `/proc` (Linux), to show
//! where the time and the memory go during a phase.

use std::sync::OnceLock;

/// A reading of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User + system CPU time, seconds.
    pub cpu_secs: f64,
    /// Write syscalls (`syscw`).
    pub writes: u64,
}

impl std::ops::Sub for Sample {
    type Output = Sample;

    fn sub(self, earlier: Sample) -> Sample {
        Sample {
            cpu_secs: (self.cpu_secs - earlier.cpu_secs).max(0.0),
            writes: self.writes.saturating_sub(earlier.writes),
        }
    }
}

impl std::ops::Add for Sample {
    type Output = Sample;

    fn add(self, other: Sample) -> Sample {
        Sample {
            cpu_secs: self.cpu_secs + other.cpu_secs,
            writes: self.writes + other.writes,
        }
    }
}

/// Clock ticks per second of `/proc/*/stat` (`getconf CLK_TCK`, almost always 100).
fn ticks_per_sec() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Reads `/proc/{pid}/stat` and `/proc/{pid}/io`; zeros where unreadable.
pub fn sample(pid: u32) -> Sample {
    let cpu_secs = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = &text[text.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks_per_sec())
        })
        .unwrap_or(0.0);
    let writes = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("syscw:"))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0);
    Sample { cpu_secs, writes }
}

/// Nanoseconds the live threads of a process have run (`/proc/{pid}/task/*/schedstat`): finer
/// than the clock ticks of `sample`, for phases of a few hundred milliseconds. Zero when
/// unreadable.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// User + system CPU time of a process and of its children that have exited and been waited
/// for (`cutime`, `cstime`), seconds: what a process tree used, once its children are reaped.
pub fn cpu_with_reaped_children_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| {
            let rest = &text[text.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let total: f64 = (11..=14)
                .map(|index| fields.get(index)?.parse::<f64>().ok())
                .sum::<Option<f64>>()?;
            Some(total / ticks_per_sec())
        })
        .unwrap_or(0.0)
}

/// Resident set size of a process (`VmRSS` in `/proc/{pid}/status`), KiB; `None` when the
/// process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time the machine spent busy in processes, or stolen by the hypervisor (`/proc/stat`),
/// seconds.
pub fn machine_busy_secs() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| {
            let line = text.lines().next()?;
            let fields: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|field| field.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal: user, nice, system and steal.
            // Interrupt time is left out: during a run it is mostly the benchmark's own
            // loopback traffic, which no process is charged for.
            let busy: f64 = [0, 1, 2, 7]
                .iter()
                .filter_map(|&index| fields.get(index))
                .sum();
            Some(busy / ticks_per_sec())
        })
        .unwrap_or(0.0)
}

/// Waits up to `limit` until other processes keep less than `cores` busy over one second;
/// returns the last reading. `own` lists the processes not to count (this one is added).
pub async fn settle(limit: std::time::Duration, cores: f64, own: &[u32]) -> f64 {
    let deadline = tokio::time::Instant::now() + limit;
    let ours = |pids: &[u32]| -> f64 {
        pids.iter()
            .chain(std::iter::once(&std::process::id()))
            .map(|&pid| sample(pid).cpu_secs)
            .sum()
    };
    loop {
        let (busy, mine, start) = (machine_busy_secs(), ours(own), tokio::time::Instant::now());
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let wall = start.elapsed().as_secs_f64();
        let other = ((machine_busy_secs() - busy) - (ours(own) - mine)).max(0.0) / wall;
        if other < cores || tokio::time::Instant::now() >= deadline {
            return other;
        }
    }
}
