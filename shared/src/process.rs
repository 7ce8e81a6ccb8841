//! Who runs this command and whether a process is still alive, on Linux,
//! macOS and Windows alike (no `/proc`).
//!
//! The only `unsafe` code of the library is here: operating-system calls
//! (the user database, `gethostname`, `kill(pid, 0)` and SIGINT on Unix;
//! `OpenProcess`/`GetExitCodeProcess` on Windows), each block with its
//! `SAFETY` comment.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// Who is running this command: `user@host`.
pub fn owner() -> String {
    format!("{}@{}", user(), host())
}

/// The user's login name.
pub fn user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|u| !u.trim().is_empty()))
        .or_else(os_user)
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// This machine's name (without a domain, lowercase on Windows as there it
/// is case-insensitive).
pub fn host() -> String {
    os_host()
        .or_else(|| {
            ["HOSTNAME", "COMPUTERNAME"]
                .iter()
                .find_map(|k| std::env::var(k).ok())
        })
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a process with this id exists on this machine.
pub fn is_alive(pid: u32) -> bool {
    os_is_alive(pid)
}

/// Asks process `pid` to stop as Ctrl+C does (SIGINT), so a session cleans
/// up what it created; `false` when it cannot be signalled (gone, someone
/// else's, or not supported on this OS).
pub fn interrupt(pid: u32) -> bool {
    os_interrupt(pid)
}

#[cfg(unix)]
fn os_interrupt(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with a positive pid signals that one process; no memory is shared.
    unsafe { libc::kill(pid, libc::SIGINT) == 0 }
}

#[cfg(windows)]
fn os_interrupt(_pid: u32) -> bool {
    // A console's Ctrl+C cannot be sent to another console's process.
    false
}

static OUTPUT_CLOSED: AtomicBool = AtomicBool::new(false);
static OUTPUT_CLOSED_NOTIFY: Notify = Notify::const_new();

/// Records that the reader of this process's output went away (the other
/// end of `| jq` exited): a live session then ends as on Ctrl+C, cleaning up
/// what it created, instead of syncing on with no one to see it.
pub fn output_closed() {
    OUTPUT_CLOSED.store(true, Ordering::SeqCst);
    OUTPUT_CLOSED_NOTIFY.notify_waiters();
}

async fn wait_output_closed() {
    loop {
        let notified = OUTPUT_CLOSED_NOTIFY.notified();
        tokio::pin!(notified);
        // Registered before the check, so a call in between is not missed.
        notified.as_mut().enable();
        if OUTPUT_CLOSED.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}

/// Resolves when the user asks the command to stop: Ctrl+C, SIGTERM or
/// SIGHUP (Unix), the console window closing / Ctrl+Break (Windows), or the
/// reader of its output going away ([`output_closed`]).
pub async fn shutdown_signal() {
    tokio::select! {
        _ = os_shutdown_signal() => {}
        _ = wait_output_closed() => {}
    }
}

/// Resolves when the user asks the command to stop (as
/// [`shutdown_signal`], without the output's reader going away): what
/// interrupts a cleanup, which a closed output must not.
pub async fn interrupt_signal() {
    os_shutdown_signal().await;
}

async fn os_shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_close};
        match (ctrl_close(), ctrl_break()) {
            (Ok(mut close), Ok(mut brk)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = close.recv() => {}
                    _ = brk.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(unix)]
fn os_user() -> Option<String> {
    // The uid's entry in the user database, as `id -un` prints it.
    // SAFETY: getuid cannot fail; getpwuid_r writes into the buffers we own
    // and we read the name only when it reported success.
    unsafe {
        let uid = libc::getuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_str()
            .ok()
            .map(str::to_string)
    }
}

#[cfg(not(unix))]
fn os_user() -> Option<String> {
    None
}

#[cfg(unix)]
fn os_host() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the result is NUL-terminated
    // within it on success (we also terminate it ourselves).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len() - 1);
    String::from_utf8(buf[..end].to_vec()).ok()
}

#[cfg(windows)]
fn os_host() -> Option<String> {
    std::env::var("COMPUTERNAME").ok().map(|h| h.to_lowercase())
}

#[cfg(not(any(unix, windows)))]
fn os_host() -> Option<String> {
    None
}

#[cfg(unix)]
fn os_is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists, it is someone else's.
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(windows)]
fn os_is_alive(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, STILL_ACTIVE};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };
    // SAFETY: the handle is checked for null and closed exactly once; the
    // exit code is written into a local.
    unsafe {
        let handle = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if handle.is_null() {
            // Access denied still means it exists.
            return std::io::Error::last_os_error().raw_os_error() == Some(5);
        }
        let mut code: u32 = 0;
        let ok = GetExitCodeProcess(handle, &mut code) != 0;
        CloseHandle(handle);
        ok && code == STILL_ACTIVE as u32
    }
}

#[cfg(not(any(unix, windows)))]
fn os_is_alive(_pid: u32) -> bool {
    // Unknown platform: assume alive, so a live session is never taken over.
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_an_exited_one_is_not() {
        assert!(is_alive(std::process::id()));
        let mut child = std::process::Command::new(if cfg!(windows) { "cmd" } else { "true" })
            .args(if cfg!(windows) {
                vec!["/C", "exit"]
            } else {
                vec![]
            })
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!is_alive(pid));
        assert!(!is_alive(0) || cfg!(windows));
    }

    #[test]
    fn owner_is_user_at_host() {
        let o = owner();
        let (u, h) = o.split_once('@').unwrap();
        assert!(!u.is_empty() && !h.is_empty(), "{o}");
    }
}
