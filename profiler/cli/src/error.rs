//! Exit codes carried by errors.

use std::fmt;

/// An error with the exit code `prof` should end with.
#[derive(Debug)]
pub struct Coded {
    pub code: i32,
    pub msg: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Coded {}

/// `prof run` refused to start the command (exit 2).
pub fn refuse(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code: 2,
        msg: msg.into(),
    })
}

/// The exit code for an error: the innermost [`Coded`] in its chain, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Coded>())
        .map(|c| c.code)
        .unwrap_or(1)
}
