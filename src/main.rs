//! The `strata` command line.

fn main() {
    std::process::exit(strata::cli::main());
}
