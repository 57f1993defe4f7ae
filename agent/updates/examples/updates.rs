//! Prints the updates section of this host (or of `--root DIR`): human by default, `--json`
//! for the section as the report carries it. For development and benchmarks.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let root = match args.iter().position(|a| a == "--root") {
        Some(i) => guestward_core::HostRoot::new(args.get(i + 1).ok_or("--root needs a directory")?)?,
        None => guestward_core::HostRoot::live(),
    };
    let config = guestward_updates::Config::default();
    let section = guestward_updates::collect(&config, &root);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &section)?;
        println!();
    } else {
        for p in &section.problems {
            println!("problem: {p}");
        }
        if let Some(data) = &section.data {
            guestward_updates::render_table(data, &mut out)?;
            for f in guestward_updates::findings(data, &config) {
                println!("finding {} {}: {}", f.id, f.severity, f.title);
            }
        }
        println!("({} ms)", section.duration_ms);
    }
    Ok(())
}
