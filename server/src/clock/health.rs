//! The monitor's verdict, [`Health`]: who agrees, who does not, who is unmeasured, and
//! the sentences that tell people why a node does not lead.

use std::fmt::Write as _;

use super::monitor::Estimate;

/// This node's verdict on its own clock, with what it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub max_offset_ms: u64,
    /// How many voters there are (this node included, if it is one).
    pub voters: usize,
    /// Whether this node is a voter (and so counts as agreeing with itself).
    pub me_voter: bool,
    /// A majority of the voters.
    pub needed: usize,
    /// Peer voters whose clocks agree with this node's, and those that do not.
    pub agree: Vec<(u64, Estimate)>,
    pub disagree: Vec<(u64, Estimate)>,
    /// Peer voters with no valid measurement.
    pub unmeasured: Vec<u64>,
    /// This node's wall clock stepped by this much within the horizon.
    pub stepped: Option<i64>,
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

/// "157680000123 ms ahead of node 1 (±1 ms)": this node against a peer.
fn against(id: u64, e: &Estimate) -> String {
    let (by, dir) = if e.offset_ms <= 0 {
        (e.offset_ms.unsigned_abs(), "ahead of")
    } else {
        (e.offset_ms.unsigned_abs(), "behind")
    };
    format!("{by} ms {dir} node {id} (±{} ms)", e.uncertainty_ms)
}

impl Health {
    /// Voters whose clocks agree with this node's, itself included if it votes.
    pub fn agreeing(&self) -> usize {
        self.agree.len() + usize::from(self.me_voter)
    }

    /// Whether this node may lead.
    pub fn ok(&self) -> bool {
        self.agreeing() >= self.needed
    }

    fn tally(&self) -> String {
        format!(
            "it agrees with {} of {} voters{} and a quorum is {}",
            self.agreeing(),
            self.voters,
            if self.me_voter {
                " counting itself,"
            } else {
                ","
            },
            self.needed
        )
    }

    /// Why this node may not lead, for people: names each peer and its offset. `None`
    /// when it may.
    pub fn problem(&self) -> Option<String> {
        if self.ok() {
            return None;
        }
        let mut o = String::new();
        if !self.disagree.is_empty() {
            let parts: Vec<String> = self
                .disagree
                .iter()
                .map(|(id, e)| against(*id, e))
                .collect();
            let _ = write!(o, "this node's clock is {}", parts.join(" and "));
        }
        if !self.unmeasured.is_empty() {
            if !o.is_empty() {
                o.push_str("; ");
            }
            let since = match self.stepped {
                Some(by) => format!(" since this node's wall clock was set by {by:+} ms"),
                None => " yet".into(),
            };
            let _ = write!(
                o,
                "{} answered no clock ping{since}",
                nodes(&self.unmeasured),
            );
        }
        let _ = write!(
            o,
            "; {}: it does not lead (max_clock_offset_ms = {})",
            self.tally(),
            self.max_offset_ms
        );
        Some(o)
    }

    /// One line on what the verdict rests on, for the log when the clock is fine.
    pub fn summary(&self) -> String {
        if self.voters == 0 {
            return "no cluster membership yet".into();
        }
        let parts: Vec<String> = self
            .agree
            .iter()
            .map(|(id, e)| format!("node {id} {:+} ms (±{} ms)", e.offset_ms, e.uncertainty_ms))
            .collect();
        format!(
            "{}{}{}",
            if parts.is_empty() {
                String::new()
            } else {
                format!("peers agree: {}; ", parts.join(", "))
            },
            self.tally(),
            match self.problem() {
                Some(p) => format!("; {p}"),
                None => String::new(),
            }
        )
    }
}
