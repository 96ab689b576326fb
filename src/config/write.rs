//! Writing conf files for `PUT/DELETE /openidm/config/…`: temp file in the same directory,
//! fsync, rename, fsync the directory, so a reader (or a crash) sees the old or the new
//! file, never half of one.

use std::io::Write;
use std::path::Path;

pub fn write_config_file(conf_dir: &Path, file_name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = conf_dir.join(format!(
        ".{file_name}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, conf_dir.join(file_name))?;
        std::fs::File::open(conf_dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn delete_config_file(conf_dir: &Path, file_name: &str) -> std::io::Result<()> {
    std::fs::remove_file(conf_dir.join(file_name))?;
    std::fs::File::open(conf_dir)?.sync_all()
}
