from regsidecar.cli import main

raise SystemExit(main())
