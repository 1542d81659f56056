//! Writes the man pages and shell completions rendered from the clap definitions.
//! Run through `scripts/gen-docs`; the test `docs::committed_man_pages_and_completions_are_current`
//! fails when the committed files differ from what this writes.

mod docs;

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, bytes) in docs::render() {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("has a folder"))?;
        std::fs::write(&path, bytes)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
