"""Model families: each one module behind the interface of huvi.families.base."""
