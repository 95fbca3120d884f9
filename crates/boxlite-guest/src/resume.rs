//! Making a restored guest its own (`Resume`).
//!
//! A guest restored from a memory snapshot continues with the snapshot's state: its wall
//! clock stands where the snapshot left it, its kernel's random generator is in the same
//! state in every clone of one snapshot (so they would all read the same bytes from
//! `/dev/urandom`), and it has the source box's name. Resume sets the clock, mixes host
//! entropy into the kernel's pool and reseeds the generator, and renames the box (its
//! hostname, and its line in the `/etc/hosts` the agent generated), in that order, before
//! the workload thaws ([`crate::freeze`]): no workload process sees the stale values.
//!
//! Random state a program keeps in its own memory (a user-space CSPRNG seeded before the
//! snapshot) is beyond the agent's reach.

use std::sync::Mutex;

use crate::init::NetConfig;
use crate::sys;

/// How much host entropy Resume takes: at least the kernel's 256-bit reseed threshold,
/// at most a few pool-sized blocks.
pub const SEED_LEN: std::ops::RangeInclusive<usize> = 32..=512;
/// The longest hostname the kernel takes (`HOST_NAME_MAX`).
pub const HOSTNAME_MAX: usize = 64;
/// The kernel's random device, in the agent's `/dev`.
const RANDOM_DEVICE: &str = "/dev/urandom";

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("seed of {0} bytes is out of range ({min} to {max} bytes)", min = SEED_LEN.start(), max = SEED_LEN.end())]
    SeedLength(usize),
    #[error("hostname {0:?} is invalid: {1}")]
    Hostname(String, &'static str),
    #[error("wall clock {0} ns is before the Unix epoch")]
    ClockBeforeEpoch(i64),
    #[error("setting the wall clock to {0} ns since the epoch")]
    SetClock(i64, #[source] std::io::Error),
    #[error("adding the seed to the kernel's entropy pool through {RANDOM_DEVICE}")]
    Entropy(#[source] std::io::Error),
    #[error("setting the hostname to {0:?}")]
    SetHostname(String, #[source] std::io::Error),
    #[error("renaming the box to {0:?} in its generated /etc/hosts")]
    Hosts(String, #[source] std::io::Error),
}

impl ResumeError {
    /// Whether the request itself was at fault (nothing was changed).
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            ResumeError::SeedLength(_)
                | ResumeError::Hostname(..)
                | ResumeError::ClockBeforeEpoch(_)
        )
    }
}

/// A checked Resume request.
pub struct Request {
    /// `None` leaves the clock alone.
    wall_clock_ns: Option<i64>,
    seed: Vec<u8>,
    /// `None` keeps the name.
    hostname: Option<String>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("wall_clock_ns", &self.wall_clock_ns)
            .field("seed", &format_args!("<{} bytes>", self.seed.len()))
            .field("hostname", &self.hostname)
            .finish()
    }
}

impl Request {
    /// Check every field, before anything changes.
    pub fn new(wall_clock_ns: i64, seed: Vec<u8>, hostname: String) -> Result<Self, ResumeError> {
        if wall_clock_ns < 0 {
            return Err(ResumeError::ClockBeforeEpoch(wall_clock_ns));
        }
        if !SEED_LEN.contains(&seed.len()) {
            return Err(ResumeError::SeedLength(seed.len()));
        }
        if !hostname.is_empty() {
            check_hostname(&hostname)?;
        }
        Ok(Request {
            wall_clock_ns: (wall_clock_ns != 0).then_some(wall_clock_ns),
            seed,
            hostname: (!hostname.is_empty()).then_some(hostname),
        })
    }
}

fn check_hostname(name: &str) -> Result<(), ResumeError> {
    let bad = |why| Err(ResumeError::Hostname(name.to_string(), why));
    if name.len() > HOSTNAME_MAX {
        return bad("longer than 64 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return bad("only ASCII letters, digits, '-' and '.' are allowed");
    }
    Ok(())
}

/// The box's identity as the agent last set it.
#[derive(Debug)]
pub struct Identity {
    /// The box's network, whose generated `/etc/hosts` maps its name.
    net: Option<NetConfig>,
    /// The name the agent gave the box (at boot, then at each rename): the one its
    /// generated `/etc/hosts` maps.
    hostname: Mutex<Option<String>>,
    /// The workload's namespaces, whose UTS namespace has the name the box sees.
    container: Option<std::sync::Arc<crate::container::Container>>,
}

impl Identity {
    pub fn new(
        net: Option<NetConfig>,
        hostname: Option<String>,
        container: Option<std::sync::Arc<crate::container::Container>>,
    ) -> Self {
        Identity {
            net,
            hostname: Mutex::new(hostname),
            container,
        }
    }

    /// Set the clock, add the seed and reseed, then rename the box, stopping at the
    /// first failure. Blocking. Returns what it did, for the console.
    pub fn apply(&self, r: &Request) -> Result<Vec<String>, ResumeError> {
        let mut done = Vec::new();
        if let Some(ns) = r.wall_clock_ns {
            sys::set_realtime(ns).map_err(|e| ResumeError::SetClock(ns, e))?;
            done.push(format!("clock set to {ns} ns"));
        }
        let random = std::fs::File::open(RANDOM_DEVICE).map_err(ResumeError::Entropy)?;
        sys::add_entropy(&random, &r.seed).map_err(ResumeError::Entropy)?;
        done.push(format!("{} bytes of entropy added", r.seed.len()));
        if let Some(name) = &r.hostname {
            let mut current = self.hostname.lock().unwrap_or_else(|p| p.into_inner());
            match &self.container {
                Some(c) => c.set_hostname(name),
                None => sys::sethostname(name),
            }
            .map_err(|e| ResumeError::SetHostname(name.clone(), e))?;
            if let Some(net) = &self.net
                && crate::net::rename_host(net, current.as_deref(), name)
                    .map_err(|e| ResumeError::Hosts(name.clone(), e))?
            {
                done.push(format!("/etc/hosts names {name}"));
            }
            *current = Some(name.clone());
            done.push(format!("hostname {name}"));
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(seed_len: usize, hostname: &str) -> Result<Request, ResumeError> {
        Request::new(0, vec![7; seed_len], hostname.to_string())
    }

    #[test]
    fn seeds_of_32_to_512_bytes_are_taken() {
        assert!(request(32, "").is_ok());
        assert!(request(512, "").is_ok());
    }

    #[test]
    fn a_seed_out_of_range_is_refused_by_its_length() {
        let short = request(10, "").unwrap_err();
        let long = request(513, "").unwrap_err();
        let empty = request(0, "").unwrap_err();

        assert_eq!(
            short.to_string(),
            "seed of 10 bytes is out of range (32 to 512 bytes)"
        );
        assert!(matches!(long, ResumeError::SeedLength(513)));
        assert!(matches!(empty, ResumeError::SeedLength(0)));
        assert!(short.is_invalid_request());
    }

    #[test]
    fn hostnames_of_letters_digits_dashes_and_dots_up_to_64_bytes_are_taken() {
        let longest = "a".repeat(64);

        for name in ["clone-1", "a", "box.example-2", longest.as_str()] {
            let r = request(32, name).unwrap();
            assert_eq!(r.hostname.as_deref(), Some(name));
        }
        assert_eq!(request(32, "").unwrap().hostname, None);
    }

    #[test]
    fn a_bad_hostname_is_refused_by_name() {
        let space = request(32, "a b").unwrap_err();
        let long = request(32, &"a".repeat(65)).unwrap_err();
        let other = ["a_b", "a/b", "é", "a\0b"].map(|n| request(32, n).is_err());

        assert_eq!(
            space.to_string(),
            "hostname \"a b\" is invalid: only ASCII letters, digits, '-' and '.' are allowed"
        );
        assert!(long.to_string().contains("longer than 64 bytes"), "{long}");
        assert_eq!(other, [true; 4]);
    }

    #[test]
    fn a_clock_before_the_epoch_is_refused_and_zero_leaves_it_alone() {
        let before = Request::new(-1, vec![0; 32], String::new()).unwrap_err();
        let zero = Request::new(0, vec![0; 32], String::new()).unwrap();
        let set = Request::new(5, vec![0; 32], String::new()).unwrap();

        assert!(matches!(before, ResumeError::ClockBeforeEpoch(-1)));
        assert_eq!(zero.wall_clock_ns, None);
        assert_eq!(set.wall_clock_ns, Some(5));
    }

    #[test]
    fn a_request_debug_never_shows_the_seed() {
        let r = Request::new(0, vec![0xab; 32], String::new()).unwrap();

        let shown = format!("{r:?}");

        assert!(shown.contains("<32 bytes>"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }
}
