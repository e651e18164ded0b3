//! The ways to the gateway ([`Rung`]) and the `kwg join --transport` modes choosing among
//! them ([`Mode`]); [`super::ladder`] climbs them.

/// A way to the gateway, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rung {
    Udp,
    Tcp,
    ApiServer,
}

impl Rung {
    pub fn as_str(self) -> &'static str {
        match self {
            Rung::Udp => "udp",
            Rung::Tcp => "tcp",
            Rung::ApiServer => "api-server",
        }
    }

    pub(super) fn next_stream(self) -> Option<Rung> {
        match self {
            Rung::Udp => Some(Rung::Tcp),
            Rung::Tcp => Some(Rung::ApiServer),
            Rung::ApiServer => None,
        }
    }
}

impl std::fmt::Display for Rung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rungs the ladder may use (`kwg join --transport`, whose help says more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every rung, best first, moving back up when a better one answers.
    #[default]
    Auto,
    /// One rung only.
    Udp,
    Tcp,
    ApiServer,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Udp => "udp",
            Mode::Tcp => "tcp",
            Mode::ApiServer => "api-server",
        }
    }

    /// The one rung of a forced mode.
    pub(super) fn forced(self) -> Option<Rung> {
        match self {
            Mode::Auto => None,
            Mode::Udp => Some(Rung::Udp),
            Mode::Tcp => Some(Rung::Tcp),
            Mode::ApiServer => Some(Rung::ApiServer),
        }
    }
}
