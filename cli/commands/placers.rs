//! `plexserve placers`: every placer with one line.

use crate::Exit;

pub fn run(json: bool) -> Result<(), Exit> {
    let placers = plexserve_solver::registry();
    if json {
        let list: Vec<serde_json::Value> = placers
            .iter()
            .map(|p| serde_json::json!({ "name": p.name(), "description": p.description() }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).expect("json"));
    } else {
        let width = placers.iter().map(|p| p.name().len()).max().unwrap_or(0);
        for p in &placers {
            println!("{:width$}  {}", p.name(), p.description());
        }
    }
    Ok(())
}
