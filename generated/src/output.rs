//! Standard output for the binaries: a closed pipe (`edgent-device info | head -1`) ends the
//! program quietly, as it would a Unix filter, instead of panicking as `println!` does.

use std::io::Write;

/// Prints a line to standard output, as `println!` does; see the [module](self) docs.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(::std::format_args!($($arg)*))
    };
}

/// Writes one line to standard output. On a closed pipe the program exits with status 0
/// (the reader has what it wanted); on any other error it says so and exits with status 1.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cannot write to standard output: {e}");
        std::process::exit(1);
    }
}
