//! A process killed by a signal while it holds a shaped link removes the link's network
//! namespaces, and the processes inside them, before it exits. Needs root and iproute2
//! (CI has both); skips with the reason otherwise.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use toolchain::shaping::{ShapedLink, remove_on_signal, unavailable};

/// Set in the child process this test starts (the same test binary).
const CHILD: &str = "EDGENT_SIGNAL_TEST_CHILD";
const NAME: &str = "edgent-sigtest";

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_signal_removes_the_links_namespaces() {
    if std::env::var_os(CHILD).is_some() {
        // The child: a link with a process inside, then wait to be killed.
        remove_on_signal().unwrap();
        let link = ShapedLink::new(NAME, 31).unwrap();
        let mut sleeper = Command::new("ip")
            .args(["netns", "exec", &link.edge_ns, "sleep", "60"])
            .spawn()
            .unwrap();
        println!("ready");
        // The signal handler ends this process (and the sleeper) long before this returns.
        let _ = sleeper.wait();
        return;
    }
    if let Some(reason) = unavailable() {
        eprintln!("skipped: {reason}");
        return;
    }
    for signal in ["-TERM", "-INT"] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "a_signal_removes_the_links_namespaces",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("ready"));
        assert!(ready, "the child did not make its link");
        assert!(
            namespaces().contains(NAME),
            "no namespace: {}",
            namespaces()
        );
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the child did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let expected = if signal == "-TERM" { 128 + 15 } else { 128 + 2 };
        assert_eq!(status.code(), Some(expected), "{signal}");
        assert!(
            !namespaces().contains(NAME),
            "{signal} left namespaces behind: {}",
            namespaces()
        );
    }
}
