//! Situations and actions (crest-wire.md §7, IDM's `Situation` and `ReconAction`), and the
//! pure assessment of a situation from what reconciliation found about one object.

/// What reconciliation found about one source (source phase) or target (target phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Situation {
    SourceIgnored,
    TargetChanged,
    SourceTargetConflict,
    FoundAlreadyLinked,
    Unqualified,
    Absent,
    TargetIgnored,
    Missing,
    AllGone,
    Unassigned,
    Ambiguous,
    Confirmed,
    LinkOnly,
    SourceMissing,
    Found,
}

impl Situation {
    /// Every situation, in the order of `situationSummary`.
    pub const ALL: [Situation; 15] = [
        Situation::SourceIgnored,
        Situation::TargetChanged,
        Situation::SourceTargetConflict,
        Situation::FoundAlreadyLinked,
        Situation::Unqualified,
        Situation::Absent,
        Situation::TargetIgnored,
        Situation::Missing,
        Situation::AllGone,
        Situation::Unassigned,
        Situation::Ambiguous,
        Situation::Confirmed,
        Situation::LinkOnly,
        Situation::SourceMissing,
        Situation::Found,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Situation::SourceIgnored => "SOURCE_IGNORED",
            Situation::TargetChanged => "TARGET_CHANGED",
            Situation::SourceTargetConflict => "SOURCE_TARGET_CONFLICT",
            Situation::FoundAlreadyLinked => "FOUND_ALREADY_LINKED",
            Situation::Unqualified => "UNQUALIFIED",
            Situation::Absent => "ABSENT",
            Situation::TargetIgnored => "TARGET_IGNORED",
            Situation::Missing => "MISSING",
            Situation::AllGone => "ALL_GONE",
            Situation::Unassigned => "UNASSIGNED",
            Situation::Ambiguous => "AMBIGUOUS",
            Situation::Confirmed => "CONFIRMED",
            Situation::LinkOnly => "LINK_ONLY",
            Situation::SourceMissing => "SOURCE_MISSING",
            Situation::Found => "FOUND",
        }
    }

    pub fn parse(name: &str) -> Option<Situation> {
        Situation::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn index(self) -> usize {
        Situation::ALL
            .iter()
            .position(|s| *s == self)
            .unwrap_or_default()
    }

    /// IDM's default action (crest-wire.md §7; the newer REPORT for the ignored situations;
    /// TARGET_CHANGED and SOURCE_TARGET_CONFLICT, which only newer IDM has, as EXCEPTION).
    pub fn default_action(self) -> Action {
        match self {
            Situation::Confirmed | Situation::Found => Action::Update,
            Situation::Absent => Action::Create,
            Situation::Unqualified => Action::Delete,
            Situation::SourceIgnored | Situation::TargetIgnored => Action::Report,
            Situation::AllGone => Action::NoReport,
            Situation::FoundAlreadyLinked
            | Situation::Ambiguous
            | Situation::Missing
            | Situation::Unassigned
            | Situation::SourceMissing
            | Situation::LinkOnly
            | Situation::TargetChanged
            | Situation::SourceTargetConflict => Action::Exception,
        }
    }
}

/// What is done about a situation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Create,
    Update,
    Delete,
    Link,
    Unlink,
    Exception,
    Ignore,
    Report,
    NoReport,
    Async,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Link,
        Action::Unlink,
        Action::Exception,
        Action::Ignore,
        Action::Report,
        Action::NoReport,
        Action::Async,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "CREATE",
            Action::Update => "UPDATE",
            Action::Delete => "DELETE",
            Action::Link => "LINK",
            Action::Unlink => "UNLINK",
            Action::Exception => "EXCEPTION",
            Action::Ignore => "IGNORE",
            Action::Report => "REPORT",
            Action::NoReport => "NOREPORT",
            Action::Async => "ASYNC",
        }
    }

    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// What the source phase knows about one source id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFacts {
    /// The source object exists (false: a `reconById` of a deleted source, or a source
    /// deleted while the run read it).
    pub source_exists: bool,
    /// It passes `validSource` and `sourceCondition`.
    pub qualifies: bool,
    /// A link from this source exists.
    pub linked: bool,
    /// The linked target exists (meaningful when `linked`).
    pub linked_target_exists: bool,
    /// Correlation candidates (meaningful when not `linked`).
    pub candidates: usize,
    /// The single candidate is already linked to another source.
    pub candidate_linked: bool,
}

/// The source-phase situation (IDM's `SourceSyncOperation.assessSituation`). Unlike IDM, a
/// source that does not qualify and has no link is not correlated: SOURCE_IGNORED, so the
/// default UNQUALIFIED → DELETE never removes a target this mapping did not link.
pub fn assess_source(f: SourceFacts) -> Situation {
    match (f.source_exists, f.qualifies, f.linked) {
        (false, _, true) if f.linked_target_exists => Situation::SourceMissing,
        (false, _, true) => Situation::LinkOnly,
        (false, _, false) => Situation::AllGone,
        (true, false, true) => Situation::Unqualified,
        (true, false, false) => Situation::SourceIgnored,
        (true, true, true) if f.linked_target_exists => Situation::Confirmed,
        (true, true, true) => Situation::Missing,
        (true, true, false) => match f.candidates {
            0 => Situation::Absent,
            1 if f.candidate_linked => Situation::FoundAlreadyLinked,
            1 => Situation::Found,
            _ => Situation::Ambiguous,
        },
    }
}

/// What the target phase knows about one target no source claimed in the source phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetFacts {
    /// It passes `validTarget`.
    pub qualifies: bool,
    pub linked: bool,
    /// The linked source exists (meaningful when `linked`).
    pub linked_source_exists: bool,
}

/// The target-phase situation (IDM's `TargetSyncOperation`); `None` for a target whose
/// source exists (the source phase handled it).
///
/// A target linked to an existing source was handled by the source phase, whether or not it
/// passes `validTarget` (as in IDM, whose target phase only sees the targets the source phase
/// left): assessing it again would count it twice, and a TARGET_IGNORED policy such as
/// DELETE would remove the target of a live source.
pub fn assess_target(f: TargetFacts) -> Option<Situation> {
    match (f.linked, f.linked_source_exists, f.qualifies) {
        (true, true, _) => None,
        (_, _, false) => Some(Situation::TargetIgnored),
        (false, _, true) => Some(Situation::Unassigned),
        (true, false, true) => Some(Situation::SourceMissing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(
        exists: bool,
        qualifies: bool,
        linked: bool,
        target: bool,
        candidates: usize,
        candidate_linked: bool,
    ) -> SourceFacts {
        SourceFacts {
            source_exists: exists,
            qualifies,
            linked,
            linked_target_exists: target,
            candidates,
            candidate_linked,
        }
    }

    #[test]
    fn source_phase_table() {
        use Situation::*;
        let table = [
            // exists, qualifies, linked, target, candidates, candidate linked → situation
            (src(true, true, true, true, 0, false), Confirmed),
            (src(true, true, true, false, 0, false), Missing),
            (src(true, true, false, false, 0, false), Absent),
            (src(true, true, false, false, 1, false), Found),
            (src(true, true, false, false, 1, true), FoundAlreadyLinked),
            (src(true, true, false, false, 2, false), Ambiguous),
            (src(true, true, false, false, 7, true), Ambiguous),
            (src(true, false, true, true, 0, false), Unqualified),
            (src(true, false, true, false, 0, false), Unqualified),
            (src(true, false, false, false, 3, false), SourceIgnored),
            (src(false, false, true, true, 0, false), SourceMissing),
            (src(false, false, true, false, 0, false), LinkOnly),
            (src(false, false, false, false, 0, false), AllGone),
        ];
        for (facts, want) in table {
            assert_eq!(assess_source(facts), want, "{facts:?}");
        }
    }

    #[test]
    fn target_phase_table() {
        use Situation::*;
        let t = |qualifies, linked, source| TargetFacts {
            qualifies,
            linked,
            linked_source_exists: source,
        };
        // Linked to a live source: the source phase's, even when it fails validTarget.
        assert_eq!(assess_target(t(false, true, true)), None);
        assert_eq!(assess_target(t(false, true, false)), Some(TargetIgnored));
        assert_eq!(assess_target(t(false, false, false)), Some(TargetIgnored));
        assert_eq!(assess_target(t(true, false, false)), Some(Unassigned));
        assert_eq!(assess_target(t(true, true, false)), Some(SourceMissing));
        assert_eq!(assess_target(t(true, true, true)), None);
    }

    #[test]
    fn default_actions_match_idm() {
        use Action::*;
        use Situation::*;
        let table = [
            (Confirmed, Update),
            (Found, Update),
            (FoundAlreadyLinked, Exception),
            (Absent, Create),
            (Ambiguous, Exception),
            (Missing, Exception),
            (Unqualified, Delete),
            (SourceIgnored, Report),
            (TargetIgnored, Report),
            (Unassigned, Exception),
            (SourceMissing, Exception),
            (LinkOnly, Exception),
            (AllGone, NoReport),
        ];
        for (s, a) in table {
            assert_eq!(s.default_action(), a, "{s:?}");
        }
    }

    #[test]
    fn names_round_trip_and_order() {
        assert_eq!(Situation::ALL.len(), 15);
        for s in Situation::ALL {
            assert_eq!(Situation::parse(s.as_str()), Some(s));
            assert_eq!(Situation::ALL[s.index()], s);
        }
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Situation::parse("confirmed"), None);
        assert_eq!(Situation::ALL[0].as_str(), "SOURCE_IGNORED");
        assert_eq!(Situation::ALL[14].as_str(), "FOUND");
    }
}
