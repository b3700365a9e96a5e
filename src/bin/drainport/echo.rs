//! The echo protocol: every line comes back as received, followed by
//! `: from <pid>`, so a client can tell which process served it.

use drainport::{Action, LineProtocol};

/// Echoes lines with the serving process's pid.
pub struct Echo {
    suffix: Vec<u8>,
}

impl Echo {
    pub fn new() -> Echo {
        Echo {
            suffix: format!(": from {}\n", std::process::id()).into_bytes(),
        }
    }
}

impl LineProtocol for Echo {
    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            // An unterminated tail (sent before a half-close) still gets
            // the suffix on a line of its own.
            out.push(b'\n');
        }
        out.extend_from_slice(&self.suffix);
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_the_line_then_the_pid() {
        let mut echo = Echo::new();
        let mut out = Vec::new();
        let pid = std::process::id();
        assert_eq!(echo.on_line(b"hi\r\n", &mut out), Action::Continue);
        assert_eq!(out, format!("hi\r\n: from {pid}\n").into_bytes());
        out.clear();
        echo.on_line(b"tail", &mut out);
        assert_eq!(out, format!("tail\n: from {pid}\n").into_bytes());
    }
}
