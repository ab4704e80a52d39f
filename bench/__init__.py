"""The project's benchmark (`make bench`): measures the targets of the design brief."""
