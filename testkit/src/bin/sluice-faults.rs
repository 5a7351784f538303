//! `sluice-faults`: see [`sluice_testkit::campaign`].

use std::process::ExitCode;

use clap::Parser;
use sluice_testkit::campaign::{run_campaign, summary, CampaignArgs};

fn main() -> ExitCode {
    let args = CampaignArgs::parse();
    match run_campaign(&args) {
        Ok(report) => {
            print!("{}", summary(&report));
            let path = args.json.clone().unwrap_or_else(|| report.directory.join("report.json"));
            match serde_json::to_vec_pretty(&report) {
                Ok(json) => {
                    if let Err(error) = std::fs::write(&path, json) {
                        eprintln!("sluice-faults: cannot write {}: {error}", path.display());
                        return ExitCode::from(2);
                    }
                    eprintln!("faults: report in {}", path.display());
                }
                Err(error) => eprintln!("sluice-faults: report: {error}"),
            }
            if report.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("sluice-faults: error: {error}");
            ExitCode::from(2)
        }
    }
}
