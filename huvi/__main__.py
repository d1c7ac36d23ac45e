from huvi.cli import main

raise SystemExit(main())
