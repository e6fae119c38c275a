//! `plexserve placers`: every placer with one line.

use super::print_json;
use crate::Exit;

pub fn run(json: bool) -> Result<(), Exit> {
    let placers = plexserve_solver::registry();
    if json {
        let list: Vec<serde_json::Value> = placers
            .iter()
            .map(|p| serde_json::json!({ "name": p.name(), "description": p.description() }))
            .collect();
        print_json(&list)?;
    } else {
        let width = placers.iter().map(|p| p.name().len()).max().unwrap_or(0);
        for p in &placers {
            println!("{:width$}  {}", p.name(), p.description());
        }
    }
    Ok(())
}
