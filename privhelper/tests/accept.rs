//! A helper out of descriptors (EMFILE on `accept`) keeps serving: the connection waiting is
//! served once descriptors are free again, and nothing ends the sessions being served. Its own
//! test binary: it lowers the whole process's descriptor limit for a moment.

use std::time::Duration;

use kwg_privhelper::auth::Access;
use kwg_privhelper::client::Client;
use kwg_privhelper::journal::Journal;
use kwg_privhelper::registry::Limits;
use kwg_privhelper::server::{self, Config, Helper};

#[tokio::test(flavor = "current_thread")]
async fn an_accept_out_of_descriptors_is_retried_and_the_helper_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        access: Access {
            group_name: "kwg".into(),
            gid: None,
        },
        allow_uids: vec![],
        allow_routes: vec![],
        limits: Limits::default(),
    };
    let journal = Journal::open(&dir.path().join("journal")).unwrap();
    let helper = Helper::start(
        cfg,
        journal,
        Box::new(kwg_privhelper::system::Kernel),
        Box::new(kwg_privhelper::policy::TrustRules),
    )
    .await
    .unwrap();
    let socket = dir.path().join("helper.sock");
    let listener = server::listener(&socket, None).unwrap();
    // Waiting in the backlog before the limit drops.
    let waiting = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    waiting.set_nonblocking(true).unwrap();
    let mut was = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut was) }, 0);
    // No descriptor can be made: the limit is the lowest free number.
    let lowest = nix::unistd::dup(std::io::stdin()).unwrap();
    let free = std::os::fd::AsRawFd::as_raw_fd(&lowest) as u64;
    drop(lowest);
    let low = libc::rlimit {
        rlim_cur: free,
        rlim_max: was.rlim_max,
    };
    // SAFETY: setrlimit reads the struct given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let serving = tokio::spawn(async move { helper.serve(listener).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &was) }, 0);
    assert!(!serving.is_finished(), "serve ended: {:?}", serving.await);
    let mut c = Client::from_stream(tokio::net::UnixStream::from_std(waiting).unwrap());
    let sessions = tokio::time::timeout(Duration::from_secs(10), c.list())
        .await
        .expect("the waiting connection is served")
        .unwrap();
    assert_eq!(sessions, vec![]);
}
