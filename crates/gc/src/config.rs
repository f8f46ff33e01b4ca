//! Heap configuration and the `USURP_DEBUG` / `USURP_GOGC` environment.

use crate::block::BLOCK_SIZE;
pub use crate::encoding::ValueEncoding;
use std::sync::OnceLock;

/// Settings of a [`Heap`](crate::Heap). `HeapConfig::default()` reads
/// `USURP_GOGC` and `USURP_DEBUG`; an invalid value is reported by
/// [`HeapConfig::validate`] (and so by `Heap::new`).
#[derive(Debug, Clone)]
pub struct HeapConfig {
    /// Hard limit on heap memory in bytes (small blocks, large spans). The
    /// address range is reserved up front. Default: physical memory, capped at 64 GiB.
    pub max_heap: usize,
    /// Collect when the heap has grown by this percent since the last mark;
    /// `None` disables pacing (collections happen only at the limit or on request).
    pub gogc: Option<u32>,
    /// The smallest heap goal (default 4 MiB).
    pub min_heap: usize,
    /// Marking threads; `None` = `World::parallelism()`.
    pub mark_workers: Option<usize>,
    /// Print one line per cycle to stderr (`USURP_DEBUG=gctrace=1`).
    pub trace: bool,
    /// Run the heap verifier after each collection, in a stop of its own
    /// (`USURP_DEBUG=gcverify=1`).
    pub verify: bool,
    /// Debug mode for stale handles (`USURP_DEBUG=checkrefs=1`): the sweep
    /// quarantines dead objects instead of freeing them — header replaced by
    /// a "freed" descriptor, payload poisoned, memory not reused until a
    /// bounded FIFO (a quarter of `max_heap`) evicts them — so that a safe
    /// access through a stale `GcRef` / `Gc<T>` panics naming the object and
    /// its descriptor instead of reading reused memory. Costs memory and
    /// sweep time; off by default.
    pub check_refs: bool,
    /// How one-word tagged values in value slots (and, for NaN-boxing, in
    /// conservative roots) name objects (issue 14; see
    /// [`ValueEncoding`]). Per heap, so markers keep it in registers.
    /// Default: [`ValueEncoding::untagged`].
    pub value_encoding: ValueEncoding,
    /// A problem found while reading `USURP_GOGC` / `USURP_DEBUG` in
    /// `default()`; [`validate`](HeapConfig::validate) reports it.
    pub env_error: Option<String>,
    /// Test and benchmark support: mark with the world stopped for the whole
    /// mark (the collector before concurrent marking), as a negative control
    /// and a baseline. Default false (mostly-concurrent marking).
    #[doc(hidden)]
    pub stw_marking: bool,
}

/// An invalid [`HeapConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `max_heap` below the minimum of 4 blocks (256 KiB) or above 2^46 bytes.
    MaxHeap(usize),
    /// `min_heap` larger than `max_heap`.
    MinHeap { min_heap: usize, max_heap: usize },
    /// `gogc` above 100000.
    Gogc(u32),
    /// `mark_workers` is zero or above 1024.
    MarkWorkers(usize),
    /// An environment variable could not be parsed.
    Env(String),
    /// The address range could not be reserved.
    Reserve(String),
    /// `value_encoding` is inconsistent (or does not cover the heap's
    /// reservation): why.
    ValueEncoding(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::MaxHeap(n) => write!(f, "usurp heap: max_heap of {n} bytes is outside 256 KiB ..= 64 TiB"),
            ConfigError::MinHeap { min_heap, max_heap } => {
                write!(f, "usurp heap: min_heap ({min_heap}) exceeds max_heap ({max_heap})")
            }
            ConfigError::Gogc(g) => write!(f, "usurp heap: gogc={g} is above 100000"),
            ConfigError::MarkWorkers(n) => write!(f, "usurp heap: mark_workers={n} must be in 1..=1024"),
            ConfigError::Env(s) => write!(f, "usurp heap: {s}"),
            ConfigError::Reserve(s) => write!(f, "usurp heap: cannot reserve the heap: {s}"),
            ConfigError::ValueEncoding(s) => write!(f, "usurp heap: invalid value_encoding: {s}"),
        }
    }
}
impl std::error::Error for ConfigError {}

fn default_max_heap() -> usize {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    let phys = if pages > 0 && size > 0 { pages as usize * size as usize } else { 1 << 30 };
    phys.clamp(64 << 20, 64 << 30)
}

impl Default for HeapConfig {
    fn default() -> Self {
        let gogc = std::env::var("USURP_GOGC").ok();
        HeapConfig::from_env_values(gogc.as_deref(), debug_options())
    }
}

impl HeapConfig {
    /// The defaults, given the values of `USURP_GOGC` (if set) and the parsed
    /// `USURP_DEBUG`. `Default` calls this with the process environment.
    pub fn from_env_values(usurp_gogc: Option<&str>, dbg: &DebugOptions) -> HeapConfig {
        let (gogc, env_error) = match usurp_gogc {
            None => (Some(100), None),
            Some(v) => match parse_gogc(v) {
                Ok(g) => (g, None),
                Err(e) => (Some(100), Some(e)),
            },
        };
        HeapConfig {
            max_heap: default_max_heap(),
            gogc,
            min_heap: 4 << 20,
            mark_workers: None,
            trace: dbg.gctrace,
            verify: dbg.gcverify,
            check_refs: dbg.checkrefs,
            value_encoding: ValueEncoding::untagged(),
            env_error: env_error.or_else(|| dbg.error.clone()),
            stw_marking: false,
        }
    }
}

/// Parse a `USURP_GOGC` value: `off` or a percentage.
pub fn parse_gogc(v: &str) -> Result<Option<u32>, String> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.parse::<u32>().map(Some).map_err(|_| format!("USURP_GOGC={v:?}: expected `off` or a percentage"))
}

impl HeapConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(e) = &self.env_error {
            return Err(ConfigError::Env(e.clone()));
        }
        if self.max_heap < 4 * BLOCK_SIZE || self.max_heap > crate::descriptor::MAX_HEAP_BYTES {
            return Err(ConfigError::MaxHeap(self.max_heap));
        }
        if self.min_heap > self.max_heap {
            return Err(ConfigError::MinHeap { min_heap: self.min_heap, max_heap: self.max_heap });
        }
        if let Some(g) = self.gogc {
            if g > 100_000 {
                return Err(ConfigError::Gogc(g));
            }
        }
        if let Some(n) = self.mark_workers {
            if n == 0 || n > 1024 {
                return Err(ConfigError::MarkWorkers(n));
            }
        }
        self.value_encoding.check().map_err(ConfigError::ValueEncoding)?;
        Ok(())
    }
}

/// The `USURP_DEBUG` options the GC understands (comma-separated key=value).
#[derive(Debug, Clone, Default)]
pub struct DebugOptions {
    pub gctrace: bool,
    pub gcverify: bool,
    pub checkrefs: bool,
    error: Option<String>,
}

/// Parse a `USURP_DEBUG` string. Keys of other components are ignored.
pub fn parse_debug(s: &str) -> DebugOptions {
    let mut d = DebugOptions::default();
    for item in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=').unwrap_or((item, "1"));
        let flag = match v.trim() {
            "1" | "true" | "on" => Some(true),
            "0" | "false" | "off" => Some(false),
            _ => None,
        };
        let slot = match k.trim() {
            "gctrace" => &mut d.gctrace,
            "gcverify" => &mut d.gcverify,
            "checkrefs" => &mut d.checkrefs,
            _ => continue,
        };
        match flag {
            Some(b) => *slot = b,
            None => d.error = Some(format!("USURP_DEBUG: {item:?}: expected 0 or 1")),
        }
    }
    d
}

/// `USURP_DEBUG`, parsed once per process.
pub fn debug_options() -> &'static DebugOptions {
    static D: OnceLock<DebugOptions> = OnceLock::new();
    D.get_or_init(|| parse_debug(&std::env::var("USURP_DEBUG").unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_debug_keys() {
        let d = parse_debug("asyncpreemptoff=1, gctrace=1,gcverify");
        assert!(d.gctrace && d.gcverify && !d.checkrefs && d.error.is_none());
        assert!(parse_debug("checkrefs=1").checkrefs);
        assert!(parse_debug("checkrefs=maybe").error.is_some());
        let d = parse_debug("gctrace=yes");
        assert!(d.error.is_some());
        assert!(!parse_debug("").gctrace);
    }

    #[test]
    fn environment_values_reach_the_config() {
        let d = parse_debug("gctrace=1,gcverify=1");
        let c = HeapConfig::from_env_values(Some("off"), &d);
        assert_eq!(c.gogc, None);
        assert!(c.trace && c.verify && !c.check_refs && c.validate().is_ok());
        assert!(HeapConfig::from_env_values(None, &parse_debug("checkrefs=1")).check_refs);
        let c = HeapConfig::from_env_values(Some("250"), &parse_debug(""));
        assert_eq!(c.gogc, Some(250));
        assert!(!c.trace && !c.verify);
        let c = HeapConfig::from_env_values(Some("fast"), &parse_debug(""));
        assert!(matches!(c.validate(), Err(ConfigError::Env(e)) if e.contains("USURP_GOGC")));
        let c = HeapConfig::from_env_values(None, &parse_debug("gctrace=2"));
        assert!(matches!(c.validate(), Err(ConfigError::Env(e)) if e.contains("USURP_DEBUG")));
        assert_eq!(HeapConfig::from_env_values(None, &parse_debug("")).gogc, Some(100));
    }

    #[test]
    fn gogc_and_validation() {
        assert_eq!(parse_gogc("off"), Ok(None));
        assert_eq!(parse_gogc(" 50 "), Ok(Some(50)));
        assert!(parse_gogc("lots").is_err());
        let mut c = HeapConfig { env_error: None, ..HeapConfig::default() };
        assert!(c.validate().is_ok());
        c.max_heap = 1000;
        assert_eq!(c.validate(), Err(ConfigError::MaxHeap(1000)));
        c.max_heap = 1 << 30;
        c.min_heap = 2 << 30;
        assert!(matches!(c.validate(), Err(ConfigError::MinHeap { .. })));
        c.min_heap = 0;
        c.gogc = Some(200_000);
        assert_eq!(c.validate(), Err(ConfigError::Gogc(200_000)));
        c.gogc = None;
        c.mark_workers = Some(0);
        assert_eq!(c.validate(), Err(ConfigError::MarkWorkers(0)));
        c.mark_workers = None;
        for good in [ValueEncoding::untagged(), ValueEncoding::low_bits(1, 1), ValueEncoding::nan_box(48, &[0xfffc])] {
            c.value_encoding = good;
            assert!(c.validate().is_ok());
        }
        c.value_encoding = ValueEncoding::low_bits(0xf, 1);
        let e = c.validate().unwrap_err();
        assert!(matches!(&e, ConfigError::ValueEncoding(m) if m.contains("drops address bits")), "{e}");
        assert!(e.to_string().starts_with("usurp heap: invalid value_encoding: "), "{e}");
    }
}
