//! Shared by the bench examples.

/// Print the median, min and max of `v` on one line.
pub fn stats(name: &str, unit: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        println!("{name:<44} no samples");
        return;
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    println!(
        "{name:<44} median {median:8.3} {unit}   min {:8.3}   max {:8.3}   (n={n})",
        v[0],
        v[n - 1]
    );
}
