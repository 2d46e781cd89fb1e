//! The log file, guarded against the program closing our descriptor.
//!
//! Programs close descriptors they do not know about (daemons closing everything above 2,
//! Python's subprocess before exec). If that happens and the number is reused, writing to
//! it would corrupt one of the program's files. So before every write the descriptor's
//! identity (device, inode) is checked; when it no longer is our file, the log is reopened
//! by path for appending and the old number is left alone (it is not ours any more).

use std::io::{self, Write};

pub struct LogFile {
    fd: libc::c_int,
    path: std::ffi::CString,
    id: (u64, u64),
}

fn identity(fd: libc::c_int) -> Option<(u64, u64)> {
    // SAFETY: zeroed stat is valid storage for fstat to fill.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat on any descriptor number is safe; it fails cleanly on a closed one.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

fn open(path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: a NUL-terminated path; the mode applies only with O_CREAT.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            flags | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(crate::sys::move_fd_high(fd))
}

impl LogFile {
    /// Creates `path`, which must not exist.
    pub fn create(path: &str) -> io::Result<LogFile> {
        let path =
            std::ffi::CString::new(path).map_err(|_| io::Error::other("NUL in the log path"))?;
        let fd = open(&path, libc::O_CREAT | libc::O_EXCL)?;
        let id = identity(fd).ok_or_else(io::Error::last_os_error)?;
        Ok(LogFile { fd, path, id })
    }

    /// Our descriptor, reopened if the program closed (and maybe reused) it.
    fn fd(&mut self) -> io::Result<libc::c_int> {
        if identity(self.fd) != Some(self.id) {
            let fd = open(&self.path, libc::O_APPEND)?;
            if identity(fd) != Some(self.id) {
                // SAFETY: closing the descriptor we just opened (a different file now).
                unsafe { libc::close(fd) };
                return Err(io::Error::other("the profile file was replaced"));
            }
            self.fd = fd;
        }
        Ok(self.fd)
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fd = self.fd()?;
        loop {
            // SAFETY: writing from a valid buffer to our own descriptor.
            let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        if identity(self.fd) == Some(self.id) {
            // SAFETY: still our descriptor (checked just above).
            unsafe { libc::close(self.fd) };
        }
    }
}
