//! The operator's terminal during an attached session, for every backend
//! that carries one: raw mode for as long as a [`RawMode`] lives, and the
//! window's size to send to the guest.

use crate::{Error, Result};

/// The terminal in raw mode for as long as this lives.
#[derive(Debug)]
pub struct RawMode(());

impl RawMode {
    /// Switches the terminal to raw mode (back when dropped).
    pub fn enable() -> Result<Self> {
        crossterm::terminal::enable_raw_mode().map_err(|e| Error::io("switching the terminal to raw mode", e))?;
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// The terminal's size as (columns, rows), when there is one.
pub fn window_size() -> Option<(u16, u16)> {
    crossterm::terminal::size().ok()
}
