//! The progress bar on standard error.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Returns a bar over `total` units (`bytes` or `rows`), or a hidden bar when `enabled` is
/// false or the total is unknown.
pub(crate) fn bar(enabled: bool, total: u64, unit: &str) -> ProgressBar {
    if !enabled || total == 0 {
        return ProgressBar::hidden();
    }
    let template = match unit {
        "bytes" => "{elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} (eta {eta})",
        _ => "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} rows (eta {eta})",
    };
    let style = ProgressStyle::with_template(template)
        .expect("the templates above are valid")
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style)
}
