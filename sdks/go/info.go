package boxlite

/*
#include "bridge.h"
*/
import "C"

import (
	"time"
	"unsafe"
)

// BoxInfo is a box's metadata.
type BoxInfo struct {
	ID    string
	Name  string // "" when the box has none
	Image string
	// Status is the state in lower case: configured, running, stopped, paused,
	// failed, ...
	Status    string
	Running   bool
	PID       int // the VMM's process id, 0 when stopped
	CPUs      int
	MemoryMiB int
	CreatedAt time.Time
	Network   NetworkInfo
}

// NetworkInfo is a box's network.
type NetworkInfo struct {
	Enabled  bool
	AllowNet []string
	// PublishedPorts are the active bindings; nil when the box is not running (they
	// are not known then).
	PublishedPorts []PublishedPort
}

// PublishedPort is a host listener forwarded to a guest port.
type PublishedPort struct {
	GuestPort uint16
	HostIP    string
	HostPort  uint16
	Protocol  Protocol
}

// BoxMetrics are a box's figures. Fields boxlite does not measure are 0 (ExecErrors,
// BytesSent, BytesReceived, CreateDuration, NetworkTCPErrors).
type BoxMetrics struct {
	CPUPercent            float64
	MemoryBytes           int64
	CommandsExecuted      int
	ExecErrors            int
	BytesSent             int64
	BytesReceived         int64
	CreateDuration        time.Duration
	BootDuration          time.Duration
	NetworkBytesSent      int64
	NetworkBytesReceived  int64
	NetworkTCPConnections int
	NetworkTCPErrors      int
}

// RuntimeMetrics are the runtime's counts.
type RuntimeMetrics struct {
	BoxesCreatedTotal     int // boxes that exist in the home now
	BoxesFailedTotal      int
	NumRunningBoxes       int
	TotalCommandsExecuted int // through this runtime
	TotalExecErrors       int // commands that failed to start, through this runtime
}

// ImageInfo is a stored image.
type ImageInfo struct {
	Reference  string
	Repository string
	Tag        string
	ID         string // the manifest digest
	Size       uint64 // bytes on disk, when HasSize
	HasSize    bool
}

// PullResult is a pulled image.
type PullResult struct {
	Reference    string
	ConfigDigest string // the manifest digest, the id boxlite keys images by
	LayerCount   int    // 0 for a built-in image (imported, not pulled)
}

// VolumeInfo is a named volume.
type VolumeInfo struct {
	Name      string // pass it to WithVolume
	CreatedAt time.Time
	Size      uint64 // when HasSize (boxlite does not measure it yet)
	HasSize   bool
}

func boxInfoOf(i *C.CBoxInfo) BoxInfo {
	out := BoxInfo{
		ID:        goStr(i.id),
		Name:      goStr(i.name),
		Image:     goStr(i.image),
		Status:    goStr(i.status),
		Running:   i.running != 0,
		PID:       int(i.pid),
		CPUs:      int(i.cpus),
		MemoryMiB: int(i.memory_mib),
		CreatedAt: time.Unix(int64(i.created_at), 0),
	}
	if n := i.network; n != nil {
		out.Network.Enabled = n.mode == C.BoxliteNetworkModeEnabled
		out.Network.AllowNet = goStrs(n.allow_net, n.allow_net_count)
		if pl := n.published_ports; pl != nil {
			out.Network.PublishedPorts = []PublishedPort{}
			if pl.items != nil && pl.count > 0 {
				for _, p := range unsafe.Slice(pl.items, int(pl.count)) {
					proto := TCP
					if p.protocol == C.BoxlitePortProtocolUdp {
						proto = UDP
					}
					out.Network.PublishedPorts = append(out.Network.PublishedPorts, PublishedPort{
						GuestPort: uint16(p.guest_port),
						HostIP:    goStr(p.host_ip),
						HostPort:  uint16(p.host_port),
						Protocol:  proto,
					})
				}
			}
		}
	}
	return out
}

func boxMetricsOf(m *C.CBoxMetrics) *BoxMetrics {
	return &BoxMetrics{
		CPUPercent:            float64(m.cpu_percent),
		MemoryBytes:           int64(m.memory_bytes),
		CommandsExecuted:      int(m.commands_executed),
		ExecErrors:            int(m.exec_errors),
		BytesSent:             int64(m.bytes_sent),
		BytesReceived:         int64(m.bytes_received),
		CreateDuration:        time.Duration(m.create_duration_ms) * time.Millisecond,
		BootDuration:          time.Duration(m.boot_duration_ms) * time.Millisecond,
		NetworkBytesSent:      int64(m.network_bytes_sent),
		NetworkBytesReceived:  int64(m.network_bytes_received),
		NetworkTCPConnections: int(m.network_tcp_connections),
		NetworkTCPErrors:      int(m.network_tcp_errors),
	}
}

func runtimeMetricsOf(m *C.CRuntimeMetrics) *RuntimeMetrics {
	return &RuntimeMetrics{
		BoxesCreatedTotal:     int(m.boxes_created_total),
		BoxesFailedTotal:      int(m.boxes_failed_total),
		NumRunningBoxes:       int(m.num_running_boxes),
		TotalCommandsExecuted: int(m.total_commands_executed),
		TotalExecErrors:       int(m.total_exec_errors),
	}
}

func imageInfoOf(i *C.CImageInfo) ImageInfo {
	return ImageInfo{
		Reference:  goStr(i.reference),
		Repository: goStr(i.repository),
		Tag:        goStr(i.tag),
		ID:         goStr(i.id),
		Size:       uint64(i.size),
		HasSize:    i.has_size != 0,
	}
}

func volumeInfoOf(v *C.CVolumeInfo) *VolumeInfo {
	out := &VolumeInfo{
		Name:    goStr(v.id),
		Size:    uint64(v.size_bytes),
		HasSize: v.has_size != 0,
	}
	if t, err := time.Parse(time.RFC3339Nano, goStr(v.created_at)); err == nil {
		out.CreatedAt = t
	}
	return out
}
