//! Numbers the kernel keeps about a process, read from `/proc/<pid>/` (by the benches and by the
//! memory test in `tests/it`).

/// The number of `field` in `/proc/<pid>/<file>` (a `status` or `io` line such as
/// `VmHWM:   45312 kB` or `write_bytes: 4096`; units as the file gives them).
pub fn field(pid: u32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/{file}"))
}
