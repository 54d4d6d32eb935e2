//! `flotilla cluster start`: a headless local cluster in the foreground.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::launcher::{Launcher, local_specs};

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Start N nodes, print one JSON line per node, supervise them until SIGINT/SIGTERM.
    Start(StartArgs),
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    #[arg(long, default_value = "./.flotilla")]
    pub dir: PathBuf,
    /// Raft ports are P+id, API ports P+1000+id.
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// Extra arguments passed to every `flotilla node`.
    #[arg(last = true)]
    pub node_args: Vec<String>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(cmd: ClusterCmd) -> Result<()> {
    let ClusterCmd::Start(a) = cmd;
    if a.nodes == 0 || a.nodes > 99 {
        anyhow::bail!("--nodes must be between 1 and 99");
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let exe = std::env::current_exe()?;
    let specs = local_specs(a.nodes, &a.dir, a.base_port);
    let mut launcher = Launcher::new(exe, specs, a.node_args.clone());
    launcher.log_to(a.dir.join("logs"));
    launcher.start_all()?;
    for s in launcher.specs.values() {
        let line = serde_json::json!({
            "id": s.id, "pid": launcher.pid(s.id), "listen": s.listen, "api": s.api,
            "data_dir": s.data_dir,
        });
        println!("{line}");
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    while !STOP.load(Ordering::SeqCst) {
        for (id, status) in launcher.reap() {
            if status.success() {
                // A node exits 0 only when it was removed from the cluster: leave it down.
                eprintln!("node {id} left the cluster");
                continue;
            }
            eprintln!("node {id} exited ({status}); restarting it");
            std::thread::sleep(Duration::from_millis(200));
            if let Ok(pid) = launcher.start(id, None) {
                let line = serde_json::json!({"id": id, "pid": pid, "restarted": true});
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    launcher.stop_all();
    Ok(())
}
