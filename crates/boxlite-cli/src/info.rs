//! `boxlite info`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use boxlite::Boxlite;

fn show(r: &Result<PathBuf, String>) -> String {
    match r {
        Ok(p) => p.display().to_string(),
        Err(e) => format!("unavailable: {e}"),
    }
}

pub(crate) async fn info_cmd(rt: Boxlite, format: &str) -> Result<i32> {
    let info = rt.info().await;
    match format {
        // Results serialize as {"Ok": ..} or {"Err": ..}: that is the documented shape.
        "json" => println!("{}", serde_json::to_string_pretty(&info)?),
        "text" => {
            println!("boxlite:       {}", info.version);
            println!("home:          {}", info.home.display());
            println!(
                "accelerator:   {} ({})",
                info.accelerator, info.accelerator_reason
            );
            println!(
                "vmm:           {} {}",
                info.vmm_binary.display(),
                info.vmm_version.as_deref().unwrap_or_else(|e| e)
            );
            println!("agent channel: {}", info.agent_channel);
            println!(
                "mke2fs:        {}",
                info.mke2fs.as_deref().unwrap_or_else(|e| e)
            );
            println!("image builds:  {}", info.image_builder);
            println!("guest RAM:     {}", info.ram_dir.display());
            println!("virtiofsd:     {}", show(&info.virtiofsd));
            println!("assets:        {}", show(&info.assets));
            println!(
                "kernel:        {}{}",
                show(&info.kernel),
                info.kernel_release
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            println!("initramfs:     {}", show(&info.initramfs));
            println!("images:        {}", info.builtin_images.join(", "));
            println!("shim:          {}", show(&info.monitor));
            println!("net helper:    {}", show(&info.network_helper));
            println!("database:      {}", info.database.display());
            println!("boxes:         {} ({} running)", info.boxes, info.running);
            println!("volumes:       {}", info.volumes);
            println!(
                "jail:          {}",
                if info.jail {
                    "on"
                } else {
                    "OFF (BOXLITE_JAIL=off: helpers run unconfined; debugging only)"
                }
            );
            for w in &info.walls {
                println!(
                    "  {:<18} {:<8} {}",
                    w.name,
                    if w.active { "active" } else { "missing" },
                    w.detail
                );
            }
        }
        other => bail!("invalid --format {other:?}; valid values are text and json"),
    }
    Ok(0)
}
