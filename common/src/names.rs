//! Validation of names that come from outside: user names and image ids.
//!
//! Both end up in file names and terminal output, so only a small safe alphabet is allowed:
//! ASCII letters, digits, `-`, `_` and `.`, not starting with `.`, bounded length.

/// Longest user name.
pub const MAX_USER_NAME: usize = 32;
/// Longest image id.
pub const MAX_IMAGE_ID: usize = 64;

fn safe(s: &str, max: usize, what: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("{what} must be 1 to {max} characters"));
    }
    if s.starts_with('.') {
        return Err(format!("{what} must not start with '.'"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c))) {
        return Err(format!("{what} may not contain {c:?} (allowed: letters, digits, - _ .)"));
    }
    Ok(())
}

/// Checks a user name.
pub fn check_user(name: &str) -> Result<(), String> {
    safe(name, MAX_USER_NAME, "a user name")
}

/// Checks an image id (it becomes a file name: no path separators, no `..`).
pub fn check_image_id(id: &str) -> Result<(), String> {
    safe(id, MAX_IMAGE_ID, "an image id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_rejects_traversal() {
        assert!(check_user("alice").is_ok());
        assert!(check_user("bob_2.x-y").is_ok());
        for bad in ["", "../x", "a/b", "a\\b", ".hidden", "é", "a b", &"x".repeat(33)] {
            assert!(check_user(bad).is_err(), "{bad}");
        }
        assert!(check_image_id("cat-1.png").is_ok());
        assert!(check_image_id("..").is_err());
    }
}
