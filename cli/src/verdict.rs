//! What `tallyctl status` concludes about the cluster from the nodes it could reach, in
//! words and an exit code: a status that prints a guess (the dead leader's last role, a
//! "leader" nobody can reach) and exits 0 is worse than none for a monitoring script.

use std::fmt::Write as _;

/// The cluster as `status` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every member answered and a leader is among them.
    Healthy,
    /// A leader answers and a quorum of voters with it, but some member does not: the
    /// cluster works, with less margin.
    Degraded(String),
    /// Nothing can be written now: no leader is known, the leader does not answer, or too
    /// few voters answer to elect one.
    NoLeader(String),
}

impl Verdict {
    /// The word in `--json` output.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded(_) => "degraded",
            Verdict::NoLeader(_) => "no_leader",
        }
    }

    pub fn problem(&self) -> Option<&str> {
        match self {
            Verdict::Healthy => None,
            Verdict::Degraded(p) | Verdict::NoLeader(p) => Some(p),
        }
    }
}

/// "node 1", "nodes 1 and 2", "nodes 1, 2 and 3".
fn nodes(ids: &[u64]) -> String {
    let names: Vec<String> = ids.iter().map(u64::to_string).collect();
    match names.as_slice() {
        [] => "no node".into(),
        [one] => format!("node {one}"),
        [init @ .., last] => format!("nodes {} and {last}", init.join(", ")),
    }
}

/// Judges the cluster: `members` every member's id, `voters` the voting ones,
/// `unreachable` those that did not answer, `leader` the leader the freshest answer
/// named (0: none) and `term` its term.
pub fn judge(
    members: &[u64],
    voters: &[u64],
    unreachable: &[u64],
    leader: u64,
    term: u64,
) -> Verdict {
    let down: Vec<u64> = members
        .iter()
        .copied()
        .filter(|id| unreachable.contains(id))
        .collect();
    let voters_down = voters.iter().filter(|v| unreachable.contains(v)).count();
    let quorum = voters.len() / 2 + 1;
    if voters.len() - voters_down < quorum {
        let mut p = format!(
            "no quorum: {voters_down} of {} voters unreachable ({}); nothing can be granted or released until ",
            voters.len(),
            nodes(&down)
        );
        let _ = write!(
            p,
            "{} more answer{}",
            quorum - (voters.len() - voters_down),
            if quorum - (voters.len() - voters_down) == 1 {
                "s"
            } else {
                ""
            }
        );
        return Verdict::NoLeader(p);
    }
    if leader == 0 {
        return Verdict::NoLeader("no leader (election in progress): retry shortly".into());
    }
    if unreachable.contains(&leader) {
        return Verdict::NoLeader(format!(
            "no reachable leader: node {leader} led term {term} and does not answer; the others will elect a new one"
        ));
    }
    if down.is_empty() {
        return Verdict::Healthy;
    }
    Verdict::Degraded(format!(
        "degraded: {} unreachable; the cluster works with {} of {} voters (a quorum is {quorum})",
        nodes(&down),
        voters.len() - voters_down,
        voters.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::{judge, Verdict};

    #[test]
    fn status_says_what_the_reachable_nodes_allow_and_no_more() {
        let all = [1, 2, 3];
        // (unreachable, leader, term, verdict word, words the problem must hold)
        let cases: [(&[u64], u64, u64, &str, &str); 7] = [
            (&[], 2, 5, "healthy", ""),
            (
                &[3],
                2,
                5,
                "degraded",
                "node 3 unreachable; the cluster works with 2 of 3",
            ),
            (
                &[1],
                1,
                5,
                "no_leader",
                "no reachable leader: node 1 led term 5",
            ),
            (&[], 0, 5, "no_leader", "no leader (election in progress)"),
            (
                &[1, 2],
                3,
                5,
                "no_leader",
                "no quorum: 2 of 3 voters unreachable (nodes 1 and 2)",
            ),
            (&[1, 2, 3], 0, 0, "no_leader", "no quorum: 3 of 3 voters"),
            (&[2], 0, 5, "no_leader", "election in progress"),
        ];
        for (down, leader, term, word, words) in cases {
            let v = judge(&all, &all, down, leader, term);
            assert_eq!(v.word(), word, "{down:?} leader {leader}: {v:?}");
            assert!(
                v.problem().unwrap_or_default().contains(words),
                "{down:?}: {v:?}"
            );
        }
        // A learner down degrades; it never costs the quorum.
        let v = judge(&[1, 2, 3, 4], &all, &[4], 1, 2);
        assert_eq!(
            v,
            Verdict::Degraded(
                "degraded: node 4 unreachable; the cluster works with 3 of 3 voters (a quorum is 2)"
                    .into()
            )
        );
    }
}
