// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "kalavara",
    products: [
        .executable(name: "master", targets: ["master"]),
        .executable(name: "volume", targets: ["volume"]),
        .executable(name: "kalavara-load", targets: ["kalavara-load"]),
    ],
    targets: [
        // RocksDB's C API from Debian's librocksdb-dev, through a module map.
        .systemLibrary(
            name: "CRocksDB",
            pkgConfig: "rocksdb",
            providers: [.apt(["librocksdb-dev"])]
        ),
        // epoll(7), which Glibc's Swift module leaves out; used by the HTTP event loop.
        .systemLibrary(name: "CEpoll"),
        // Everything both daemons share: HTTP, storage, cluster logic, routes.
        .target(
            name: "KalavaraCore",
            dependencies: ["CRocksDB", "CEpoll"],
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
        .executableTarget(name: "master", dependencies: ["KalavaraCore"],
                          swiftSettings: [.swiftLanguageMode(.v5)]),
        .executableTarget(name: "volume", dependencies: ["KalavaraCore"],
                          swiftSettings: [.swiftLanguageMode(.v5)]),
        // Load generator and measurement helpers for scripts/bench.
        .executableTarget(name: "kalavara-load", dependencies: ["KalavaraCore"],
                          swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KalavaraCoreTests", dependencies: ["KalavaraCore"],
                    swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "IntegrationTests", dependencies: ["KalavaraCore"],
                    swiftSettings: [.swiftLanguageMode(.v5)]),
    ]
)
