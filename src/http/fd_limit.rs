//! The open-file limit (`RLIMIT_NOFILE`) against the connection limit: every client
//! connection is a descriptor, and so is every model's open log. Checked once at
//! start-up: a soft limit too low for the settings is raised towards the hard limit,
//! and the connection limit is capped at three quarters of what remains, so accepting
//! connections can never use the descriptors the models' files need.

/// Descriptors kept for everything but connections and models' logs: the listener,
/// the runtime's epoll and wake-up descriptors, standard streams, and files opened
/// briefly (snapshots, directory syncs).
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// What to do about the descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorPlan {
    /// Raise the soft limit to this (`None`: leave it).
    pub raise_to: Option<u64>,
    /// The connection limit to enforce.
    pub max_connections: usize,
    /// Descriptors the settings may need (`max_connections` + `max_models` + files +
    /// [`RESERVED_DESCRIPTORS`]) that the limit, even raised, does not cover.
    pub shortfall: u64,
}

/// Plans for a soft limit `soft` and hard limit `hard` (`None`: unlimited), a
/// configured connection limit `connections`, and `other` descriptors needed besides
/// connections (models' logs, blocking threads' files, [`RESERVED_DESCRIPTORS`]).
pub fn plan(
    soft: Option<u64>,
    hard: Option<u64>,
    connections: usize,
    other: u64,
) -> DescriptorPlan {
    let wanted = (connections as u64).saturating_add(other);
    let raise_to = match (soft, hard) {
        (Some(s), h) if s < wanted => {
            let target = h.map_or(wanted, |h| h.min(wanted));
            (target > s).then_some(target)
        }
        _ => None,
    };
    let effective = raise_to.or(soft);
    let (max_connections, shortfall) = match effective {
        None => (connections, 0),
        Some(limit) => {
            let cap = usize::try_from(limit / 4 * 3).unwrap_or(usize::MAX).max(1);
            (connections.min(cap), wanted.saturating_sub(limit))
        }
    };
    DescriptorPlan {
        raise_to,
        max_connections,
        shortfall,
    }
}

/// Reads the limit, raises the soft limit if [`plan`] says so, logs what it did, and
/// returns the connection limit to enforce.
pub fn apply(connections: usize, other: u64) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let mut p = plan(limit.current, limit.maximum, connections, other);
    if let Some(to) = p.raise_to {
        let mut raised = limit;
        raised.current = Some(to);
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(
                from = limit.current,
                to,
                "raised the open-file limit (RLIMIT_NOFILE) for the connection limit"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
                p = plan(limit.current, limit.current, connections, other);
            }
        }
    }
    if p.max_connections < connections {
        tracing::warn!(
            configured = connections,
            enforced = p.max_connections,
            "max_connections capped at 3/4 of the open-file limit; raise `ulimit -n` \
             (LimitNOFILE= under systemd) to allow more"
        );
    }
    if p.shortfall > 0 {
        tracing::warn!(
            missing = p.shortfall,
            "the open-file limit is below what max_connections and max_models could \
             use together; with many models, new connections or model files may fail \
             with `too many open files`"
        );
    }
    p.max_connections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_settings_under_a_1024_limit_keep_768_connections() {
        // 768 connections + 1000 models + 64 blocking threads + 64 reserved, hard 1024.
        let p = plan(Some(1024), Some(1024), 768, 1128);
        assert_eq!(p.raise_to, None);
        assert_eq!(p.max_connections, 768);
        assert_eq!(p.shortfall, 768 + 1128 - 1024);
    }

    #[test]
    fn a_low_soft_limit_is_raised_towards_the_hard_limit() {
        let p = plan(Some(1024), Some(524_288), 768, 1128);
        assert_eq!(p.raise_to, Some(1896));
        assert_eq!(p.max_connections, 768);
        assert_eq!(p.shortfall, 0);
        let p = plan(Some(1024), Some(1500), 768, 1128);
        assert_eq!(p.raise_to, Some(1500));
        assert_eq!(p.shortfall, 396);
    }

    #[test]
    fn connections_are_capped_at_three_quarters_of_a_small_limit() {
        let p = plan(Some(256), Some(256), 768, 200);
        assert_eq!(p.raise_to, None);
        assert_eq!(p.max_connections, 192);
        let p = plan(Some(1), Some(1), 768, 0);
        assert_eq!(p.max_connections, 1);
    }

    #[test]
    fn a_sufficient_or_unlimited_limit_changes_nothing() {
        let p = plan(Some(65_536), Some(65_536), 768, 1128);
        assert_eq!(
            p,
            DescriptorPlan {
                raise_to: None,
                max_connections: 768,
                shortfall: 0
            }
        );
        assert_eq!(plan(None, None, 5000, 1128).max_connections, 5000);
        assert_eq!(plan(Some(1024), None, 768, 1128).raise_to, Some(1896));
    }
}
