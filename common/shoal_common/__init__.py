"""Small pieces shared by every shoal process: names, labels and logging. Depends on no component."""
